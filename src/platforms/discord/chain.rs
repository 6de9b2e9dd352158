//! The reply-chain map: which conversation each message (the user's and the bot's) belongs to, so a
//! reply continues the conversation of the message it replies to. Kept in the store (namespace
//! [`CHAIN_NS`]) so chains survive a restart.

use crate::store::{self, Store, StoreError};

use super::policy::Scope;

/// Store namespace of the map `message id → conversation`.
pub const CHAIN_NS: &str = "discord.chain";

/// One record: the conversation a message belongs to (`None` = the channel's default conversation).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    thread: Option<String>,
}

/// Remembers that `message_id` belongs to `scope`.
pub fn record(store: &dyn Store, message_id: &str, scope: &Scope) -> Result<(), StoreError> {
    let thread = match scope {
        Scope::Chat => None,
        Scope::Thread(t) => Some(t.clone()),
    };
    store::put_json(store, CHAIN_NS, message_id, &Record { thread })
}

/// The conversation `message_id` belongs to, if the message was seen.
pub fn lookup(store: &dyn Store, message_id: &str) -> Result<Option<Scope>, StoreError> {
    Ok(
        store::get_json::<Record>(store, CHAIN_NS, message_id)?.map(|r| match r.thread {
            None => Scope::Chat,
            Some(t) => Scope::Thread(t),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn records_round_trip() {
        let store = MemoryStore::new();
        assert_eq!(lookup(&store, "1").unwrap(), None);
        record(&store, "1", &Scope::Thread("chain-1".into())).unwrap();
        record(&store, "2", &Scope::Chat).unwrap();
        assert_eq!(
            lookup(&store, "1").unwrap(),
            Some(Scope::Thread("chain-1".into()))
        );
        assert_eq!(lookup(&store, "2").unwrap(), Some(Scope::Chat));
    }
}
