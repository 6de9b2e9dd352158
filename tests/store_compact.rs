//! The sled store staying small: its space report, the start-up compaction (a bloated store shrinks and
//! keeps every record, turns in order), and crash safety of the compaction's directory swap.

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

use switchboard::domain::{ConversationKey, Role};
use switchboard::store::sled_store::compact::{sibling, OLD_SUFFIX, READY_SUFFIX, TMP_SUFFIX};
use switchboard::store::sled_store::{CompactPolicy, SledStore, SpaceReport};
use switchboard::store::{
    ConversationMeta, HistoryStore, StateStore, Turn, TurnStatus, VALUE_FORMAT,
};

/// 2026-11-22T02:15:00Z.
const NOW_MS: i64 = 1_795_313_700_000;
/// A small cache, as on a small server.
const CACHE_MB: u64 = 4;
/// The namespaces the tests write.
const NAMESPACES: [&str; 2] = ["t.hot", "t.cold"];

/// Compacts whenever the store is at least twice its live data, whatever its size.
const EAGER: CompactPolicy = CompactPolicy {
    max_ratio: 2,
    min_on_disk: 0,
};

fn turn(text: String, at_ms: i64) -> Turn {
    Turn {
        role: Role::User,
        author: None,
        text,
        at_ms,
        status: TurnStatus::Complete,
        source: None,
    }
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, CACHE_MB, NOW_MS).unwrap().store
}

/// Everything a store holds that the tests check survives: conversations with their turns, and the
/// key-value namespaces.
#[derive(Debug, PartialEq)]
struct Contents {
    conversations: Vec<(ConversationKey, ConversationMeta, Vec<Turn>)>,
    kv: Vec<(String, Vec<u8>)>,
}

fn contents(store: &SledStore) -> Contents {
    let conversations = store
        .list_conversations()
        .unwrap()
        .into_iter()
        .map(|(key, meta)| {
            let turns = store.recent_turns(&key, meta.epoch, 10_000).unwrap();
            (key, meta, turns)
        })
        .collect();
    let kv = NAMESPACES
        .iter()
        .flat_map(|ns| store.kv_scan(ns, "").unwrap())
        .collect();
    Contents { conversations, kv }
}

/// History in a few conversations (one of them reset), some cold state, and hot state rewritten
/// `rewrites` times over, as usage counters and ledgers are on every turn.
fn fill(store: &SledStore, rewrites: usize) {
    for c in 0..4 {
        let key = ConversationKey(format!("telegram:{c}"));
        if c == 3 {
            store
                .append_turn(&key, 0, &turn("forgotten".into(), 1))
                .unwrap();
            store.reset_conversation(&key, 2).unwrap();
        }
        let epoch = store.conversation(&key).unwrap().map_or(0, |m| m.epoch);
        for i in 0..50 {
            let text = format!("conversation {c}, message {i}: {}", "words ".repeat(20));
            store
                .append_turn(&key, epoch, &turn(text, 1_000 + i))
                .unwrap();
        }
    }
    for k in 0..100 {
        store
            .kv_put(
                "t.cold",
                &format!("k{k:03}"),
                format!("cold {k}").as_bytes(),
            )
            .unwrap();
    }
    let value = vec![b'x'; 2048];
    for round in 0..rewrites {
        for k in 0..16 {
            let mut v = value.clone();
            v.extend_from_slice(round.to_string().as_bytes());
            store
                .kv_put("t.hot", &format!("counter{k:02}"), &v)
                .unwrap();
        }
    }
}

/// A filled store, closed: its temp dir, its database path and its contents.
fn closed_store(rewrites: usize) -> (tempfile::TempDir, std::path::PathBuf, Contents) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, rewrites);
    let (db, before) = (store.path().to_owned(), contents(&store));
    (dir, db, before)
}

#[test]
fn a_bloated_store_shrinks_on_compaction_and_keeps_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 1500);
    let before = contents(&store);
    let space = store.space().unwrap();
    assert!(space.live > 0 && space.on_disk > 0, "{space:?}");
    drop(store);

    let (opened, report) = SledStore::open_compacting(dir.path(), CACHE_MB, NOW_MS, EAGER).unwrap();
    let report = report.expect("a store many times its live data is compacted");
    assert!(
        report.after_on_disk * 2 < report.before.on_disk,
        "did not shrink by half: {report:?}"
    );
    let store = opened.store;
    assert_eq!(contents(&store), before);

    // Turns appended after the compaction sort after the copied ones, in every conversation.
    let key = ConversationKey("telegram:1".into());
    store
        .append_turn(&key, 0, &turn("after".into(), 9_000))
        .unwrap();
    let recent = store.recent_turns(&key, 0, 2).unwrap();
    assert_eq!(recent[0], before.conversations[1].2[49]);
    assert_eq!(recent[1].text, "after");
    // No copy or old database is left beside it.
    let db = store.path().to_owned();
    for suffix in [TMP_SUFFIX, READY_SUFFIX, OLD_SUFFIX] {
        assert!(!sibling(&db, suffix).exists(), "{suffix} left behind");
    }
    // And it survives a plain reopen.
    drop(store);
    assert_eq!(contents(&open(dir.path())), {
        let mut expected = before;
        expected.conversations[1].1.turns += 1;
        expected.conversations[1].1.updated_ms = 9_000;
        expected.conversations[1]
            .2
            .push(turn("after".into(), 9_000));
        expected
    });
}

#[test]
fn a_store_within_the_policy_is_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()), 0);
    let small_enough = CompactPolicy {
        max_ratio: 4,
        min_on_disk: 1 << 40,
    };
    let (_, report) =
        SledStore::open_compacting(dir.path(), CACHE_MB, NOW_MS, small_enough).unwrap();
    assert_eq!(report, None, "below the size floor");
    let (_, report) =
        SledStore::open_compacting(dir.path(), CACHE_MB, NOW_MS, CompactPolicy::NEVER).unwrap();
    assert_eq!(report, None, "never");
}

#[test]
fn the_policy_compares_size_on_disk_with_live_data() {
    let policy = CompactPolicy {
        max_ratio: 8,
        min_on_disk: 1000,
    };
    let at = |on_disk, live| policy.wants(&SpaceReport { on_disk, live });
    assert!(at(8001, 1000));
    assert!(!at(8000, 1000), "at the ratio exactly: not yet");
    assert!(!at(999, 1), "below the floor");
    assert!(at(1000, 0), "files and no data at all");
    assert!(!CompactPolicy::NEVER.wants(&SpaceReport {
        on_disk: u64::MAX,
        live: 1
    }));
    let space = SpaceReport {
        on_disk: 3000,
        live: 1000,
    };
    assert!((space.ratio() - 3.0).abs() < f64::EPSILON);
}

/// A crash while copying leaves a half-written `compact-tmp`: the original is used as it is, and the
/// leftover is removed.
#[test]
fn a_crash_while_copying_leaves_the_original_intact() {
    let (dir, db, before) = closed_store(10);
    // A half-written copy: a real sled database with part of the data, and a torn file beside it.
    let half = tempfile::tempdir().unwrap();
    let partial = open(half.path());
    partial.kv_put("t.cold", "k000", b"half").unwrap();
    drop(partial);
    let tmp = sibling(&db, TMP_SUFFIX);
    std::fs::rename(half.path().join("db"), &tmp).unwrap();
    std::fs::write(tmp.join("snap.torn"), [VALUE_FORMAT, 0, 0]).unwrap();

    let store = open(dir.path());
    assert_eq!(contents(&store), before);
    assert!(!tmp.exists(), "the half-written copy is removed");
    drop(store);
    // A compaction after that one starts afresh and succeeds.
    let (opened, report) = SledStore::open_compacting(dir.path(), CACHE_MB, NOW_MS, EAGER).unwrap();
    assert!(report.is_some());
    assert_eq!(contents(&opened.store), before);
}

/// A crash between the swap's two renames leaves the complete copy and the original aside, and no
/// database: the copy is swapped in. A crash before the first rename leaves both side by side: the
/// same.
#[test]
fn a_crash_during_the_swap_is_finished_at_the_next_open() {
    for original_still_in_place in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        fill(&store, 10);
        let db = store.path().to_owned();
        drop(store);
        // The "copy": the same data plus a marker that tells it from the original.
        let copy_dir = tempfile::tempdir().unwrap();
        let copy = open(copy_dir.path());
        fill(&copy, 10);
        copy.kv_put("t.cold", "marker", b"the copy").unwrap();
        let expected = contents(&copy);
        drop(copy);
        std::fs::rename(copy_dir.path().join("db"), sibling(&db, READY_SUFFIX)).unwrap();
        if !original_still_in_place {
            std::fs::rename(&db, sibling(&db, OLD_SUFFIX)).unwrap();
        }

        let store = open(dir.path());
        assert_eq!(
            contents(&store),
            expected,
            "in place: {original_still_in_place}"
        );
        for suffix in [READY_SUFFIX, OLD_SUFFIX] {
            assert!(!sibling(&db, suffix).exists(), "{suffix} left behind");
        }
    }
}

/// A crash while deleting the old database after a finished swap leaves part of it: it is removed.
#[test]
fn a_leftover_original_after_a_finished_swap_is_removed() {
    let (dir, db, before) = closed_store(1);
    let old = sibling(&db, OLD_SUFFIX);
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("conf"), b"partly deleted").unwrap();
    let store = open(dir.path());
    assert_eq!(contents(&store), before);
    assert!(!old.exists());
}
