//! The `HistoryStore` and `StateStore` contracts, each run against both the sled store (real sled in a
//! temp dir) and the in-memory store, plus the sled-only behaviour: reopening, corruption quarantine, lock and schema refusal.

// Scenarios and measurements read best whole, their arithmetic is on small known values (counts,
// nanoseconds, ids) and their JSON builders take values whole: these pedantic lints are off for test and
// benchmark code only.
#![allow(
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::needless_pass_by_value
)]

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use switchboard::clock::DAY_MS;
use switchboard::domain::{AnswerSource, ConversationKey, Role, TierName};
use switchboard::store::memory::MemoryStore;
use switchboard::store::sled_store::{
    OpenedStore, SledStore, META_TREE, SCHEMA_KEY, SCHEMA_VERSION,
};
use switchboard::store::{
    decode, encode, get_json, prune_dated, put_json, ConversationMeta, DatedNamespace, Durable,
    HistoryStore, PruneReport, RetentionPolicy, StateStore, Store, StoreError, Turn, TurnStatus,
};
use tempfile::TempDir;

/// 2026-11-22T02:15:00Z, a fixed "now" for quarantine names.
const NOW_MS: i64 = 1_795_313_700_000;
/// A small cache, as on a small server.
const CACHE_MB: u64 = 4;

fn key(s: &str) -> ConversationKey {
    ConversationKey(s.to_owned())
}

fn user(text: &str, at_ms: i64) -> Turn {
    Turn {
        role: Role::User,
        author: None,
        text: text.to_owned(),
        at_ms,
        status: TurnStatus::Complete,
        source: None,
    }
}

fn texts(turns: &[Turn]) -> Vec<&str> {
    turns.iter().map(|t| t.text.as_str()).collect()
}

/// A sled store in a fresh temp dir (the dir must outlive the store).
fn sled_store() -> (TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let opened = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap();
    assert!(opened.quarantined.is_none());
    (dir, opened.store)
}

// ---------------------------------------------------------------------------------------------------------
// The contracts: each check takes any `HistoryStore` or any `StateStore` and is run against both
// implementations below.
// ---------------------------------------------------------------------------------------------------------

fn check_append_and_recent(store: &dyn HistoryStore) {
    let k = key("telegram:1");
    assert!(store.recent_turns(&k, 0, 10).unwrap().is_empty());
    assert_eq!(store.conversation(&k).unwrap(), None);
    for i in 0..20 {
        store
            .append_turn(&k, 0, &user(&format!("m{i}"), 1_000 + i))
            .unwrap();
    }
    // Oldest first, the last `limit`.
    let last5 = store.recent_turns(&k, 0, 5).unwrap();
    assert_eq!(texts(&last5), vec!["m15", "m16", "m17", "m18", "m19"]);
    let all = store.recent_turns(&k, 0, 100).unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(all[0].text, "m0");
    assert!(store.recent_turns(&k, 0, 0).unwrap().is_empty());
    // Other conversations, including one whose key is a prefix of this one, are separate.
    store
        .append_turn(&key("telegram:"), 0, &user("x", 5))
        .unwrap();
    store
        .append_turn(&key("telegram:10"), 0, &user("y", 6))
        .unwrap();
    assert_eq!(store.recent_turns(&k, 0, 100).unwrap().len(), 20);
    assert_eq!(
        texts(&store.recent_turns(&key("telegram:"), 0, 100).unwrap()),
        vec!["x"]
    );
    // Another epoch of the same conversation holds nothing.
    assert!(store.recent_turns(&k, 1, 10).unwrap().is_empty());

    let meta = store.conversation(&k).unwrap().unwrap();
    assert_eq!(
        meta,
        ConversationMeta {
            epoch: 0,
            created_ms: 1_000,
            updated_ms: 1_019,
            turns: 20
        }
    );
}

fn check_reset_and_stale_appends(store: &dyn HistoryStore) {
    let k = key("discord:chan:7");
    store.append_turn(&k, 0, &user("before", 1)).unwrap();
    store.append_turn(&k, 0, &user("before2", 2)).unwrap();
    assert_eq!(store.reset_conversation(&k, 100).unwrap(), 1);
    assert!(store.recent_turns(&k, 0, 10).unwrap().is_empty());
    assert!(store.recent_turns(&k, 1, 10).unwrap().is_empty());
    let meta = store.conversation(&k).unwrap().unwrap();
    assert_eq!((meta.epoch, meta.turns, meta.updated_ms), (1, 0, 100));

    // A reply that finishes after /reset belongs to epoch 0 and is discarded.
    store.append_turn(&k, 0, &user("stale", 101)).unwrap();
    assert!(store.recent_turns(&k, 0, 10).unwrap().is_empty());
    assert!(store.recent_turns(&k, 1, 10).unwrap().is_empty());
    assert_eq!(store.conversation(&k).unwrap().unwrap().turns, 0);

    store.append_turn(&k, 1, &user("after", 102)).unwrap();
    assert_eq!(
        texts(&store.recent_turns(&k, 1, 10).unwrap()),
        vec!["after"]
    );
    let meta = store.conversation(&k).unwrap().unwrap();
    assert_eq!((meta.epoch, meta.turns, meta.updated_ms), (1, 1, 102));

    // Resetting a conversation never seen creates it at epoch 1.
    let fresh = key("terminal:me");
    assert_eq!(store.reset_conversation(&fresh, 7).unwrap(), 1);
    assert_eq!(
        store.conversation(&fresh).unwrap().unwrap(),
        ConversationMeta {
            epoch: 1,
            created_ms: 7,
            updated_ms: 7,
            turns: 0
        }
    );
    assert_eq!(store.reset_conversation(&fresh, 8).unwrap(), 2);
}

fn check_list_conversations(store: &dyn HistoryStore) {
    assert!(store.list_conversations().unwrap().is_empty());
    store.append_turn(&key("b"), 0, &user("1", 10)).unwrap();
    store.append_turn(&key("a"), 0, &user("2", 20)).unwrap();
    store.append_turn(&key("a"), 0, &user("3", 30)).unwrap();
    let meta = ConversationMeta {
        epoch: 4,
        created_ms: 1,
        updated_ms: 2,
        turns: 0,
    };
    store.put_conversation(&key("c"), &meta).unwrap();
    let list = store.list_conversations().unwrap();
    let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["a", "b", "c"]);
    assert_eq!(list[0].1.turns, 2);
    assert_eq!(list[0].1.updated_ms, 30);
    assert_eq!(list[2].1, meta);
    assert_eq!(store.conversation(&key("c")).unwrap(), Some(meta));
}

fn check_kv(store: &dyn StateStore) {
    assert_eq!(store.kv_get("quota", "k1").unwrap(), None);
    store.kv_put("quota", "k1", b"one").unwrap();
    store.kv_put("quota", "k2", b"two").unwrap();
    store.kv_put("quota", "j", b"jay").unwrap();
    store.kv_put("quotas", "k1", b"other ns").unwrap();
    store.kv_put("q", "uota", b"split ns").unwrap();
    assert_eq!(store.kv_get("quota", "k1").unwrap().unwrap(), b"one");
    assert_eq!(store.kv_get("quotas", "k1").unwrap().unwrap(), b"other ns");

    // Scan by prefix, in key order, only within the namespace.
    let scan = store.kv_scan("quota", "k").unwrap();
    assert_eq!(
        scan,
        vec![
            ("k1".to_owned(), b"one".to_vec()),
            ("k2".to_owned(), b"two".to_vec())
        ]
    );
    assert_eq!(store.kv_scan("quota", "").unwrap().len(), 3);
    assert!(store.kv_scan("quota", "z").unwrap().is_empty());
    assert_eq!(store.kv_scan("q", "").unwrap().len(), 1);

    // A visit sees what a scan returns, one entry at a time, in the same order.
    for (ns, prefix) in [("quota", "k"), ("quota", ""), ("quota", "z"), ("q", "")] {
        let mut visited = Vec::new();
        store
            .kv_visit(ns, prefix, &mut |k, v| {
                visited.push((k.to_owned(), v.to_vec()));
            })
            .unwrap();
        assert_eq!(
            visited,
            store.kv_scan(ns, prefix).unwrap(),
            "{ns} / {prefix}"
        );
    }

    // Atomic update: counter increments, None deletes.
    let mut incr = |old: Option<&[u8]>| {
        let n = old.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        Some((n + 1).to_be_bytes().to_vec())
    };
    for _ in 0..3 {
        store.kv_update("usage", "u1", &mut incr).unwrap();
    }
    assert_eq!(
        store.kv_update("usage", "u1", &mut incr).unwrap().unwrap(),
        4u64.to_be_bytes().to_vec()
    );
    assert_eq!(store.kv_update("usage", "u1", &mut |_| None).unwrap(), None);
    assert_eq!(store.kv_get("usage", "u1").unwrap(), None);

    store.kv_remove("quota", "k1").unwrap();
    store.kv_remove("quota", "never-there").unwrap();
    assert_eq!(store.kv_get("quota", "k1").unwrap(), None);
    assert_eq!(store.kv_scan("quota", "k").unwrap().len(), 1);

    // JSON helpers in the versioned value format.
    put_json(
        store,
        "settings",
        "chat:1",
        &vec!["a".to_owned(), "b".to_owned()],
    )
    .unwrap();
    let back: Option<Vec<String>> = get_json(store, "settings", "chat:1").unwrap();
    assert_eq!(back.unwrap(), vec!["a", "b"]);
}

fn check_prune(store: &dyn HistoryStore) {
    let none = RetentionPolicy {
        max_turns: 0,
        max_age_ms: 0,
    };
    let (a, b) = (key("a"), key("b"));
    for i in 0..10 {
        store
            .append_turn(&a, 0, &user(&format!("a{i}"), i * 100))
            .unwrap();
    }
    for i in 0..3 {
        store
            .append_turn(&b, 0, &user(&format!("b{i}"), 800 + i))
            .unwrap();
    }
    assert_eq!(
        store.prune(none, 10_000).unwrap(),
        PruneReport {
            conversations: 2,
            turns_deleted: 0
        }
    );

    // By count: the oldest go first.
    let by_turns = RetentionPolicy {
        max_turns: 4,
        max_age_ms: 0,
    };
    assert_eq!(
        store.prune(by_turns, 10_000).unwrap(),
        PruneReport {
            conversations: 2,
            turns_deleted: 6
        }
    );
    assert_eq!(
        texts(&store.recent_turns(&a, 0, 100).unwrap()),
        vec!["a6", "a7", "a8", "a9"]
    );
    assert_eq!(store.recent_turns(&b, 0, 100).unwrap().len(), 3);

    // By age: at now = 1_500 with 650 ms, turns at 850 and later stay (a9 at 900, b at 800..=802 go).
    let by_age = RetentionPolicy {
        max_turns: 0,
        max_age_ms: 650,
    };
    assert_eq!(
        store.prune(by_age, 1_500).unwrap(),
        PruneReport {
            conversations: 2,
            turns_deleted: 6
        }
    );
    assert_eq!(texts(&store.recent_turns(&a, 0, 100).unwrap()), vec!["a9"]);
    assert!(store.recent_turns(&b, 0, 100).unwrap().is_empty());
    // The age limit is inclusive: exactly max_age old stays.
    assert_eq!(
        store
            .prune(
                RetentionPolicy {
                    max_turns: 0,
                    max_age_ms: 600
                },
                1_500
            )
            .unwrap()
            .turns_deleted,
        0
    );
    // Appending still works after pruning and keeps order.
    store.append_turn(&a, 0, &user("a10", 2_000)).unwrap();
    assert_eq!(
        texts(&store.recent_turns(&a, 0, 100).unwrap()),
        vec!["a9", "a10"]
    );

    // Both limits at once.
    let c = key("c");
    for i in 0..6 {
        store
            .append_turn(&c, 0, &user(&format!("c{i}"), i))
            .unwrap();
    }
    let both = RetentionPolicy {
        max_turns: 3,
        max_age_ms: 10,
    };
    // Age removes c0 and c1 (now 12), then count keeps the newest 3 of c2..c5.
    assert_eq!(store.prune(both, 12).unwrap().conversations, 3);
    assert_eq!(
        texts(&store.recent_turns(&c, 0, 100).unwrap()),
        vec!["c3", "c4", "c5"]
    );
}

fn check_value_round_trip(store: &dyn HistoryStore) {
    let k = key("telegram:-100200:thread");
    let answer = Turn {
        role: Role::Assistant,
        author: None,
        text: "line one\nline \"two\" with ünïcödé, emoji 🦀 and a \u{0} byte".to_owned(),
        at_ms: -5,
        status: TurnStatus::Complete,
        source: Some(AnswerSource {
            tier: TierName::paid(),
            provider: "ollama-cloud".to_owned(),
            model: "kimi-k2.5".to_owned(),
            key_fingerprint: Some("…a1b2".to_owned()),
        }),
    };
    let cut = Turn {
        role: Role::Assistant,
        author: None,
        text: "half an ans".to_owned(),
        at_ms: 6,
        status: TurnStatus::Incomplete,
        source: Some(AnswerSource {
            tier: TierName::free(),
            provider: "openrouter".to_owned(),
            model: "some/model:free".to_owned(),
            key_fingerprint: None,
        }),
    };
    let by_author = Turn {
        author: Some("Alice".to_owned()),
        ..user("hi all", 7)
    };
    for t in [&answer, &cut, &by_author] {
        store.append_turn(&k, 0, t).unwrap();
    }
    let back = store.recent_turns(&k, 0, 10).unwrap();
    assert_eq!(back, vec![answer, cut.clone(), by_author]);
    assert_eq!(back[1].status, TurnStatus::Incomplete);
    // And the value format itself: one version byte, then JSON.
    let bytes = encode(&cut).unwrap();
    assert_eq!(bytes[0], switchboard::store::VALUE_FORMAT);
    assert_eq!(decode::<Turn>(&bytes).unwrap(), cut);
    assert!(matches!(decode::<Turn>(&[]), Err(StoreError::Decode(_))));
    assert!(matches!(
        decode::<Turn>(&[99, b'{', b'}']),
        Err(StoreError::Decode(_))
    ));
}

fn check_dated_records_age_out(store: &dyn StateStore) {
    assert_eq!(prune_dated(store, NOW_MS).unwrap(), 0, "nothing declared");
    let usage = DatedNamespace {
        ns: "t.usage",
        keep_days: 35,
    };
    store.declare_dated(usage);
    // Declaring again replaces, never duplicates.
    store.declare_dated(usage);
    assert_eq!(store.dated_namespaces(), [usage]);
    let today = NOW_MS / DAY_MS;
    for day in [today - 40, today - 36, today - 35, today - 1, today] {
        store
            .kv_put("t.usage", &format!("{day}/user/telegram:1"), b"x")
            .unwrap();
    }
    store.kv_put("t.usage", "telegram:1", b"pre-dated").unwrap();
    store
        .kv_put("t.usagex", "1/y", b"another namespace")
        .unwrap();
    assert_eq!(prune_dated(store, NOW_MS).unwrap(), 3);
    let left: Vec<String> = store
        .kv_scan("t.usage", "")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<String> = [today - 35, today - 1, today]
        .iter()
        .map(|d| format!("{d}/user/telegram:1"))
        .collect();
    assert_eq!(left, expected);
    assert!(store.kv_get("t.usagex", "1/y").unwrap().is_some());
}

/// One contract suite per seam, each run against both implementations: `$suite::sled::check_…` and
/// `$suite::memory::check_…`.
macro_rules! contract {
    ($suite:ident: $($check:ident),* $(,)?) => {
        mod $suite {
            mod sled {
                $(#[test] fn $check() { let (_dir, store) = super::super::sled_store(); super::super::$check(&store); })*
            }
            mod memory {
                use switchboard::store::memory::MemoryStore;
                $(#[test] fn $check() { super::super::$check(&MemoryStore::new()); })*
            }
        }
    };
}

contract!(
    history_contract: check_append_and_recent,
    check_reset_and_stale_appends,
    check_list_conversations,
    check_prune,
    check_value_round_trip,
);

contract!(state_contract: check_kv, check_dated_records_age_out);

// ---------------------------------------------------------------------------------------------------------
// sled only
// ---------------------------------------------------------------------------------------------------------

#[test]
fn history_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("telegram:42");
    {
        let store = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap().store;
        store.append_turn(&k, 0, &user("one", 1)).unwrap();
        store.append_turn(&k, 0, &user("two", 2)).unwrap();
        assert_eq!(store.reset_conversation(&k, 3).unwrap(), 1);
        store.append_turn(&k, 1, &user("three", 4)).unwrap();
        store
            .append_turn(
                &k,
                1,
                &Turn {
                    status: TurnStatus::Incomplete,
                    ..user("cut", 5)
                },
            )
            .unwrap();
        store.kv_put("quota", "acct", b"7").unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(store.flush())
            .unwrap();
    }
    let reopened = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap();
    assert!(reopened.quarantined.is_none());
    let store = reopened.store;
    let turns = store.recent_turns(&k, 1, 10).unwrap();
    assert_eq!(texts(&turns), vec!["three", "cut"]);
    assert_eq!(turns[1].status, TurnStatus::Incomplete);
    assert_eq!(store.conversation(&k).unwrap().unwrap().epoch, 1);
    assert_eq!(store.kv_get("quota", "acct").unwrap().unwrap(), b"7");
    // Appends after the reopen sort after the old ones (the sequence survives restarts).
    store.append_turn(&k, 1, &user("four", 6)).unwrap();
    assert_eq!(
        texts(&store.recent_turns(&k, 1, 10).unwrap()),
        vec!["three", "cut", "four"]
    );
    assert!(!dir.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("corrupt")));
}

/// Fills a store, drops it, then damages its files with `damage`; reopening must quarantine it.
fn assert_quarantined_after(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap().store;
        for i in 0..200 {
            store
                .append_turn(&key("k"), 0, &user(&format!("turn {i}"), i))
                .unwrap();
        }
    }
    damage(&dir.path().join("db"));
    let OpenedStore { store, quarantined } =
        SledStore::open(dir.path(), CACHE_MB, NOW_MS).expect("a corrupt store is replaced");
    let q = quarantined.expect("the return value reports the quarantine");
    assert_eq!(
        q.moved_to,
        dir.path().join("db.corrupt-20261122T021500Z"),
        "reason: {}",
        q.reason
    );
    assert!(q.moved_to.is_dir());
    assert!(!q.reason.is_empty());
    // A fresh, empty, working store.
    assert!(store.list_conversations().unwrap().is_empty());
    assert!(store.recent_turns(&key("k"), 0, 10).unwrap().is_empty());
    store.append_turn(&key("k"), 0, &user("new", 1)).unwrap();
    assert_eq!(store.recent_turns(&key("k"), 0, 10).unwrap().len(), 1);
    drop(store);
    // The fresh one opens cleanly again.
    let again = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap();
    assert!(again.quarantined.is_none());
    assert_eq!(again.store.list_conversations().unwrap().len(), 1);
}

fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn garbage_config_file_is_quarantined() {
    assert_quarantined_after(|db| overwrite(&db.join("conf"), &[0x5a; 64]));
}

#[test]
fn garbage_data_file_is_quarantined() {
    assert_quarantined_after(|db| {
        let len = std::fs::metadata(db.join("db")).unwrap().len() as usize;
        overwrite(&db.join("db"), &vec![0xA5; len.max(4096)]);
        // Snapshots would let sled rebuild from them; damage them too.
        for entry in std::fs::read_dir(db).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                overwrite(&p, &[0x3c; 100]);
            }
        }
    });
}

#[test]
fn truncated_data_file_is_quarantined() {
    assert_quarantined_after(|db| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(db.join("db"))
            .unwrap();
        f.set_len(10).unwrap();
        for entry in std::fs::read_dir(db).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
    });
}

#[test]
fn a_second_quarantine_gets_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..2 {
        drop(SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap());
        overwrite(&dir.path().join("db").join("conf"), &[0x5a; 64]);
        let q = SledStore::open(dir.path(), CACHE_MB, NOW_MS)
            .unwrap()
            .quarantined
            .unwrap();
        let expected = if n == 0 {
            "db.corrupt-20261122T021500Z"
        } else {
            "db.corrupt-20261122T021500Z-2"
        };
        assert_eq!(q.moved_to, dir.path().join(expected));
    }
}

#[test]
fn a_locked_store_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap().store;
    first.append_turn(&key("k"), 0, &user("kept", 1)).unwrap();
    match SledStore::open(dir.path(), CACHE_MB, NOW_MS) {
        Err(StoreError::Locked { path }) => {
            assert_eq!(Path::new(&path), dir.path().join("db"));
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of a locked store succeeded"),
    }
    // Nothing was moved aside and the holder still works.
    let names: Vec<String> = dir
        .path()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["db"]);
    assert_eq!(first.recent_turns(&key("k"), 0, 5).unwrap().len(), 1);
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap());
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let meta = db.open_tree(META_TREE).unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
            SCHEMA_VERSION.to_be_bytes()
        );
        meta.insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path(), CACHE_MB, NOW_MS) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        Err(other) => panic!("expected NewerSchema, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    assert_eq!(
        dir.path().read_dir().unwrap().count(),
        1,
        "nothing moved aside"
    );
}

#[test]
fn prune_removes_turns_left_by_a_reset_cut_short() {
    let (_dir, store) = sled_store();
    let k = key("k");
    for i in 0..5 {
        store
            .append_turn(&k, 0, &user(&format!("old{i}"), i))
            .unwrap();
    }
    // A crash between the epoch bump and the deletion leaves this state: metadata at epoch 1, turns in 0.
    let mut meta = store.conversation(&k).unwrap().unwrap();
    meta.epoch = 1;
    store.put_conversation(&k, &meta).unwrap();
    store.append_turn(&k, 1, &user("new", 10)).unwrap();
    let none = RetentionPolicy {
        max_turns: 0,
        max_age_ms: 0,
    };
    // Orphans are invisible, so they are not counted as deleted turns.
    assert_eq!(
        store.prune(none, 100).unwrap(),
        PruneReport {
            conversations: 1,
            turns_deleted: 0
        }
    );
    assert_eq!(texts(&store.recent_turns(&k, 1, 10).unwrap()), vec!["new"]);
    // They are gone: even pointing the metadata back at epoch 0 finds nothing.
    meta.epoch = 0;
    store.put_conversation(&k, &meta).unwrap();
    assert!(store.recent_turns(&k, 0, 10).unwrap().is_empty());
    // And a sweep that read an older epoch than the turns' never deletes the newer turns.
    assert_eq!(store.prune(none, 100).unwrap().turns_deleted, 0);
    assert_eq!(texts(&store.recent_turns(&k, 1, 10).unwrap()), vec!["new"]);
}

#[test]
fn concurrent_appends_to_one_conversation_all_land() {
    let (_dir, store) = sled_store();
    let store = Arc::new(store);
    let k = key("busy");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    store
                        .append_turn(&k, 0, &user(&format!("{t}:{i}"), i))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.conversation(&k).unwrap().unwrap().turns, 200);
    let turns = store.recent_turns(&k, 0, 1000).unwrap();
    assert_eq!(turns.len(), 200);
    // Each thread's own turns are in its order.
    for t in 0..4 {
        let mine: Vec<String> = turns
            .iter()
            .filter(|x| x.text.starts_with(&format!("{t}:")))
            .map(|x| x.text.clone())
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("{t}:{i}")).collect();
        assert_eq!(mine, expected);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Property: sled and memory agree on any sequence of appends and resets.
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Append to conversation `conv` in its current epoch, or (stale) in the one before.
    Append {
        conv: usize,
        stale: bool,
        at: i64,
    },
    Reset {
        conv: usize,
    },
    Prune {
        max_turns: usize,
        max_age_ms: i64,
        now: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, proptest::bool::weighted(0.15), 0..1_000i64)
            .prop_map(|(conv, stale, at)| Op::Append { conv, stale, at }),
        1 => (0..3usize).prop_map(|conv| Op::Reset { conv }),
        1 => (0..6usize, 0..400i64, 0..1_200i64)
            .prop_map(|(max_turns, max_age_ms, now)| Op::Prune { max_turns, max_age_ms, now }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sled_and_memory_agree(ops in proptest::collection::vec(op(), 1..60), limit in 0..12usize) {
        let (_dir, sled) = sled_store();
        let memory = MemoryStore::new();
        let stores: [&dyn Store; 2] = [&sled, &memory];
        let keys: Vec<ConversationKey> = (0..3).map(|i| key(&format!("c{i}"))).collect();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Append { conv, stale, at } => {
                    let k = &keys[conv];
                    let epoch = memory.conversation(k).unwrap().map_or(0, |m| m.epoch);
                    let epoch = if stale { epoch.saturating_sub(1) } else { epoch };
                    let t = user(&format!("t{n}"), at);
                    for s in stores { s.append_turn(k, epoch, &t).unwrap(); }
                }
                Op::Reset { conv } => {
                    let got: Vec<u32> = stores
                        .iter()
                        .map(|s| s.reset_conversation(&keys[conv], n as i64).unwrap())
                        .collect();
                    prop_assert_eq!(got[0], got[1]);
                }
                Op::Prune { max_turns, max_age_ms, now } => {
                    let policy = RetentionPolicy { max_turns, max_age_ms };
                    let got: Vec<PruneReport> =
                        stores.iter().map(|s| s.prune(policy, now).unwrap()).collect();
                    prop_assert_eq!(got[0], got[1]);
                }
            }
        }
        prop_assert_eq!(sled.list_conversations().unwrap(), memory.list_conversations().unwrap());
        for k in &keys {
            let epoch = memory.conversation(k).unwrap().map_or(0, |m| m.epoch);
            for e in [epoch.saturating_sub(1), epoch] {
                prop_assert_eq!(
                    sled.recent_turns(k, e, limit).unwrap(),
                    memory.recent_turns(k, e, limit).unwrap()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Crash safety and cross-process locking, with this test binary re-run as a child process.
// ---------------------------------------------------------------------------------------------------------

/// Set in the child: `<mode>:<state dir>`.
const CHILD_ENV: &str = "SB_STORE_TEST_CHILD";
/// Conversations the crash child writes to.
const CRASH_CONVERSATIONS: usize = 4;
/// The child flushes (and reports) after this many appends.
const FLUSH_EVERY: usize = 25;

/// Runs only as a child (a no-op in a normal test run): `hold` opens the store and waits to be killed;
/// `write` appends numbered turns round-robin, flushing and reporting every [`FLUSH_EVERY`].
#[test]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').unwrap();
    let store = SledStore::open(Path::new(dir), CACHE_MB, NOW_MS)
        .unwrap()
        .store;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    if mode == "hold" {
        println!("ready");
        std::thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let keys: Vec<ConversationKey> = (0..CRASH_CONVERSATIONS)
        .map(|c| key(&format!("crash{c}")))
        .collect();
    let mut next: Vec<u64> = keys
        .iter()
        .map(|k| store.recent_turns(k, 0, usize::MAX).unwrap().len() as u64)
        .collect();
    for i in 0.. {
        let c = i % CRASH_CONVERSATIONS;
        let text = format!("{}", next[c]);
        store
            .append_turn(&keys[c], 0, &user(&text, i as i64))
            .unwrap();
        next[c] += 1;
        if (i + 1) % FLUSH_EVERY == 0 {
            rt.block_on(store.flush()).unwrap();
            let counts: Vec<String> = next.iter().map(u64::to_string).collect();
            println!("flushed {}", counts.join(","));
        }
    }
}

fn spawn_child(mode: &str, dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_store_locked_by_another_process_is_an_error() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("hold", dir.path());
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints "test child_process ... " before the child's own output on the same line.
    assert!(
        lines.any(|l| l.unwrap().ends_with("ready")),
        "the child opened the store"
    );
    let result = SledStore::open(dir.path(), CACHE_MB, NOW_MS);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(result, Err(StoreError::Locked { .. })),
        "expected Locked, got {:?}",
        result.map(|o| o.store)
    );
    // Once the other process is gone the store opens, unquarantined.
    let opened = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap();
    assert!(opened.quarantined.is_none());
}

#[test]
fn sigkill_under_load_leaves_a_consistent_prefix_with_every_flushed_turn() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<ConversationKey> = (0..CRASH_CONVERSATIONS)
        .map(|c| key(&format!("crash{c}")))
        .collect();
    for round in 0..3 {
        let mut child = spawn_child("write", dir.path());
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill it (SIGKILL) mid-stream after a few acknowledged flushes.
        let mut flushed: Vec<u64> = vec![0; CRASH_CONVERSATIONS];
        let mut acks = 0;
        for line in lines {
            let line = line.unwrap();
            if let Some((_, counts)) = line.split_once("flushed ") {
                flushed = counts.split(',').map(|n| n.parse().unwrap()).collect();
                acks += 1;
                if acks == 4 + round {
                    break;
                }
            }
        }
        // Let it run on a little (0, 5, 20 ms) so the kill also lands between flushes.
        std::thread::sleep(std::time::Duration::from_millis([0, 5, 20][round]));
        child.kill().unwrap();
        child.wait().unwrap();

        let opened = SledStore::open(dir.path(), CACHE_MB, NOW_MS).unwrap();
        assert!(
            opened.quarantined.is_none(),
            "round {round}: a crash is not corruption"
        );
        let store = opened.store;
        for (c, k) in keys.iter().enumerate() {
            let meta = store.conversation(k).unwrap().unwrap();
            let turns = store.recent_turns(k, 0, usize::MAX).unwrap();
            // A prefix: 0, 1, 2, … with no gap.
            let expected: Vec<String> = (0..turns.len()).map(|n| n.to_string()).collect();
            assert_eq!(texts(&turns), expected, "round {round}, conversation {c}");
            // The metadata is written just after its turn, so each kill can leave its count one short
            // (never ahead of the history).
            let stored = turns.len() as u64;
            assert!(
                meta.turns <= stored && stored - meta.turns <= round as u64 + 1,
                "round {round}, conversation {c}: metadata counts {} for {stored} stored turns",
                meta.turns
            );
            // Everything acknowledged after a flush survived.
            assert!(
                turns.len() as u64 >= flushed[c],
                "round {round}, conversation {c}: {} turns < {} flushed",
                turns.len(),
                flushed[c]
            );
        }
    }
}
