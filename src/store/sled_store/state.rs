//! The key-value state in sled: the `kv` tree (namespace ‖ 0xFF ‖ key) and the [`StateStore`]
//! implementation.

use super::{backend, SledStore, SEP};
use crate::store::{DatedNamespace, StateStore, StoreError, ValueUpdate, Visit};

impl SledStore {
    /// `namespace ‖ 0xFF ‖ key`.
    fn kv_key(ns: &str, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
        k.extend_from_slice(ns.as_bytes());
        k.push(SEP);
        k.extend_from_slice(key.as_bytes());
        k
    }
}

impl StateStore for SledStore {
    fn kv_get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .get(Self::kv_key(ns, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn kv_put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.kv
            .insert(Self::kv_key(ns, key), value)
            .map_err(backend)?;
        Ok(())
    }

    fn kv_remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.kv.remove(Self::kv_key(ns, key)).map_err(backend)?;
        Ok(())
    }

    fn kv_update(
        &self,
        ns: &str,
        key: &str,
        f: &mut ValueUpdate<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .update_and_fetch(Self::kv_key(ns, key), f)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut entries = Vec::new();
        self.kv_visit(ns, prefix, &mut |key, value| {
            entries.push((key.to_owned(), value.to_vec()));
        })?;
        Ok(entries)
    }

    fn kv_visit(&self, ns: &str, prefix: &str, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let skip = ns.len() + 1;
        for entry in self.kv.scan_prefix(Self::kv_key(ns, prefix)) {
            let (k, v) = entry.map_err(backend)?;
            let key = std::str::from_utf8(&k[skip..])
                .map_err(|e| StoreError::Decode(format!("kv key: {e}")))?;
            visit(key, &v);
        }
        Ok(())
    }

    fn declare_dated(&self, dated: DatedNamespace) {
        self.dated.declare(dated);
    }

    fn dated_namespaces(&self) -> Vec<DatedNamespace> {
        self.dated.list()
    }
}
