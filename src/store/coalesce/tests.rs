//! The coalescing layer over the in-memory store: what a graceful stop keeps (everything), what a crash
//! loses (at most one interval of counters), and what is never held back (everything not declared).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{prune_dated, Durable, StateStore};

const COUNTERS: &str = "test.counters";
const QUOTA: &str = "router";
const INTERVAL: Duration = Duration::from_secs(5);

fn layered() -> (Arc<MemoryStore>, Arc<Coalescing>) {
    let inner = Arc::new(MemoryStore::new());
    let store = Coalescing::start(inner.clone(), INTERVAL);
    store.declare_counters(COUNTERS);
    (inner, store)
}

/// Adds one to the counter `key` the way the usage counters do: a read-modify-write.
fn bump(store: &dyn StateStore, key: &str) {
    store
        .kv_update(COUNTERS, key, &mut |old| {
            let n = old.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
            Some((n + 1).to_be_bytes().to_vec())
        })
        .unwrap();
}

fn count(store: &dyn StateStore, key: &str) -> u64 {
    store
        .kv_get(COUNTERS, key)
        .unwrap()
        .map_or(0, |b| u64::from_be_bytes(b.as_slice().try_into().unwrap()))
}

/// Lets the write-out task run after the paused clock moved.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn counts_survive_a_graceful_stop_exactly() {
    let (inner, store) = layered();
    for i in 0..1_000 {
        bump(store.as_ref(), &format!("k{}", i % 7));
    }
    // Nothing reached the store beneath yet: a thousand bumps, zero writes.
    assert!(inner.kv_scan(COUNTERS, "").unwrap().is_empty());
    assert_eq!(store.held(), 7);
    store.flush_all().await.unwrap();
    let total: u64 = (0..7)
        .map(|k| count(inner.as_ref(), &format!("k{k}")))
        .sum();
    assert_eq!(total, 1_000);
    assert_eq!(count(inner.as_ref(), "k0"), 143);
    assert_eq!(store.held(), 0);
    // The layer reads what it wrote, and keeps counting from there.
    bump(store.as_ref(), "k0");
    assert_eq!(count(store.as_ref(), "k0"), 144);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loses_at_most_one_interval_of_counts() {
    let (inner, store) = layered();
    for _ in 0..30 {
        bump(store.as_ref(), "user");
    }
    tokio::time::advance(INTERVAL).await;
    settle().await;
    // The periodic write-out ran: everything counted before it is in the store beneath.
    assert_eq!(count(inner.as_ref(), "user"), 30);
    assert_eq!(store.held(), 0);
    tokio::time::advance(INTERVAL / 2).await;
    for _ in 0..12 {
        bump(store.as_ref(), "user");
    }
    // A crash now (the process gone, nothing written out): the store beneath is what survives, and it
    // lacks only what was counted since the last write-out, less than one interval ago.
    assert_eq!(count(inner.as_ref(), "user"), 30);
    assert_eq!(count(store.as_ref(), "user"), 42);
    tokio::time::advance(INTERVAL / 2).await;
    settle().await;
    assert_eq!(count(inner.as_ref(), "user"), 42);
}

#[tokio::test(start_paused = true)]
async fn quota_state_and_other_namespaces_are_written_at_once() {
    let (inner, store) = layered();
    store
        .kv_put(QUOTA, "acct/openrouter/k1", b"daily_exhausted")
        .unwrap();
    store
        .kv_update(QUOTA, "acct/openrouter/k2", &mut |_| {
            Some(b"no_credits".to_vec())
        })
        .unwrap();
    assert_eq!(
        inner
            .kv_get(QUOTA, "acct/openrouter/k1")
            .unwrap()
            .as_deref(),
        Some(&b"daily_exhausted"[..])
    );
    assert_eq!(
        inner
            .kv_get(QUOTA, "acct/openrouter/k2")
            .unwrap()
            .as_deref(),
        Some(&b"no_credits"[..])
    );
    store.kv_remove(QUOTA, "acct/openrouter/k1").unwrap();
    assert_eq!(inner.kv_get(QUOTA, "acct/openrouter/k1").unwrap(), None);
    assert_eq!(store.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn reads_and_scans_see_held_changes_and_the_sweep_ages_them_out() {
    let (inner, store) = layered();
    store.declare_dated(DatedNamespace {
        ns: COUNTERS,
        keep_days: 1,
    });
    inner
        .kv_put(COUNTERS, "1/old", &5u64.to_be_bytes())
        .unwrap();
    inner
        .kv_put(COUNTERS, "9/kept", &1u64.to_be_bytes())
        .unwrap();
    bump(store.as_ref(), "9/kept");
    bump(store.as_ref(), "9/new");
    let scanned: Vec<String> = store
        .kv_scan(COUNTERS, "9/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(scanned, ["9/kept", "9/new"]);
    let mut visited = Vec::new();
    store
        .kv_visit(COUNTERS, "9/", &mut |k, v| {
            visited.push((k.to_owned(), v.to_vec()));
        })
        .unwrap();
    assert_eq!(visited, store.kv_scan(COUNTERS, "9/").unwrap());
    assert_eq!(count(store.as_ref(), "9/kept"), 2);
    // The retention sweep on day 10 removes day 1 through the layer, held removals included.
    let removed = prune_dated(store.as_ref(), 10 * 86_400_000).unwrap();
    assert_eq!(removed, 1);
    assert_eq!(store.kv_get(COUNTERS, "1/old").unwrap(), None);
    store.flush_all().await.unwrap();
    assert_eq!(inner.kv_get(COUNTERS, "1/old").unwrap(), None);
    assert_eq!(count(inner.as_ref(), "9/kept"), 2);
    assert_eq!(count(inner.as_ref(), "9/new"), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_layer_writes_out_what_it_held() {
    let (inner, store) = layered();
    bump(store.as_ref(), "k");
    drop(store);
    assert_eq!(count(inner.as_ref(), "k"), 1);
}
