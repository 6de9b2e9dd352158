//! Unit tests of the account book, the versioned writes and the backoff.

use super::*;
use crate::clock::DAY_MS;

const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

fn book(accounts: usize, per_minute: Option<u32>, daily: Option<u64>) -> AccountBook {
    let mut b = AccountBook::default();
    for i in 0..accounts {
        let a = b.account("openrouter", &format!("acct{i}"), per_minute, daily);
        b.add_key(a, &format!("K{i}"), Some(format!("fp:{i}")));
    }
    b
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    assert_eq!(backoff_with_jitter(0, 0.0), Duration::from_secs(1));
    assert_eq!(
        backoff_with_jitter(0, 0.999_999),
        Duration::from_millis(1_999)
    );
    assert_eq!(backoff_with_jitter(1, 0.0), Duration::from_secs(2));
    assert_eq!(backoff_with_jitter(3, 1.0), Duration::from_secs(16));
    assert_eq!(backoff_with_jitter(10, 1.0), Duration::from_secs(60));
    assert_eq!(backoff_with_jitter(u32::MAX, 0.0), Duration::from_secs(30));
}

#[test]
fn in_order_drains_accounts_and_resets_at_midnight() {
    let mut b = book(2, None, Some(2));
    let all = [0, 1];
    let mut c = 0;
    let picks: Vec<_> = (0..5)
        .map(|_| {
            b.reserve(&all, Spread::InOrder, &mut c, NOON)
                .map(|r| r.account)
        })
        .collect();
    assert_eq!(picks, [Some(0), Some(0), Some(1), Some(1), None]);
    assert_eq!(b.availability(0, NOON), Availability::Exhausted);
    let tomorrow = next_utc_midnight(NOON);
    assert_eq!(b.availability(0, tomorrow), Availability::Ready);
    assert_eq!(b.left_today(0, tomorrow), Some(2));
    assert_eq!(
        b.reserve(&all, Spread::InOrder, &mut c, tomorrow)
            .map(|r| r.account),
        Some(0)
    );
}

#[test]
fn per_minute_window_blocks_until_the_oldest_leaves() {
    let mut b = book(1, Some(2), None);
    let mut c = 0;
    assert!(b.reserve(&[0], Spread::InOrder, &mut c, NOON).is_some());
    assert!(b
        .reserve(&[0], Spread::InOrder, &mut c, NOON + 10)
        .is_some());
    assert_eq!(
        b.availability(0, NOON + 20),
        Availability::MinuteFull(NOON + MINUTE_MS)
    );
    assert_eq!(b.availability(0, NOON + MINUTE_MS), Availability::Ready);
}

#[test]
fn least_used_spreads_and_rejected_keys_are_skipped() {
    let mut b = book(3, None, None);
    let all = [0, 1, 2];
    let mut c = 0;
    let picks: Vec<_> = (0..6)
        .map(|_| {
            b.reserve(&all, Spread::LeastUsed, &mut c, NOON)
                .unwrap()
                .account
        })
        .collect();
    let mut counts = [0; 3];
    for p in picks {
        counts[p] += 1;
    }
    assert_eq!(counts, [2, 2, 2]);
    assert!(b.reject_key(1, 401));
    assert!(!b.reject_key(1, 401));
    assert_eq!(b.availability(1, NOON), Availability::Rejected(401));
    for _ in 0..4 {
        assert_ne!(
            b.reserve(&all, Spread::LeastUsed, &mut c, NOON)
                .unwrap()
                .account,
            1
        );
    }
    b.clear_rejections();
    assert_eq!(b.availability(1, NOON), Availability::Ready);
}

#[test]
fn two_keys_share_one_account() {
    let mut b = AccountBook::default();
    let a = b.account("openrouter", "team", None, Some(3));
    b.add_key(a, "K1", None);
    b.add_key(a, "K2", None);
    let mut c = 0;
    let keys: Vec<_> = (0..4)
        .map(|_| {
            b.reserve(&[a], Spread::InOrder, &mut c, NOON)
                .map(|r| r.key)
        })
        .collect();
    assert_eq!(keys, [Some(0), Some(1), Some(0), None]);
}

#[test]
fn learning_from_key_info_sets_used_and_holds() {
    let mut b = book(1, None, None);
    b.learn(0, Some(50), Some(0), NOON);
    assert_eq!(
        b.availability(0, NOON),
        Availability::Held(Hold::DailyExhausted, next_utc_midnight(NOON))
    );
    b.learn(0, Some(50), Some(7), NOON);
    assert_eq!(b.left_today(0, NOON), Some(7));
    assert_eq!(b.availability(0, NOON), Availability::Ready);
}

#[test]
fn state_round_trips_through_the_store() {
    let store = crate::store::memory::MemoryStore::new();
    let mut b = book(1, Some(20), Some(50));
    let mut c = 0;
    let p = b
        .reserve(&[0], Spread::InOrder, &mut c, NOON)
        .unwrap()
        .persist;
    write_newer(&store, &p.0, &p.1).unwrap();
    let p = b.hold_no_credits(0, NOON, Duration::from_secs(3600));
    write_newer(&store, &p.0, &p.1).unwrap();
    let mut again = book(1, Some(20), Some(50));
    again.load(&store);
    assert_eq!(again.accounts[0].record, b.accounts[0].record);
    assert_eq!(
        again.availability(0, NOON + 1),
        Availability::Held(Hold::NoCredits, NOON + 3_600_000)
    );
}

#[test]
fn a_late_success_keeps_a_hold_set_while_it_was_in_flight() {
    let mut b = book(1, None, None);
    let mut c = 0;
    // Turn A reserves, then turn B reserves and gets a per-minute 429 while A is still streaming.
    let a = b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap();
    let _b = b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap();
    b.hold_rate_limited(0, NOON + 30_000, true);
    assert!(
        b.succeeded(0, a.ticket, NOON + 10).is_some(),
        "backoff reset"
    );
    assert_eq!(b.accounts[0].record.backoff_step, 0);
    assert_eq!(
        b.availability(0, NOON + 10),
        Availability::Held(Hold::RateLimited, NOON + 30_000)
    );
    // A request that started after the hold was set (it had expired) clears it.
    let later = b
        .reserve(&[0], Spread::InOrder, &mut c, NOON + 30_000)
        .unwrap();
    assert!(b.succeeded(0, later.ticket, NOON + 30_001).is_some());
    assert_eq!(b.accounts[0].record.hold, None);
    // An expired hold is cleared whoever succeeds.
    b.hold_rate_limited(0, NOON + 40_000, false);
    assert!(b.succeeded(0, a.ticket, NOON + 40_000).is_some());
    assert_eq!(b.accounts[0].record.hold, None);
    assert!(
        b.succeeded(0, a.ticket, NOON + 40_001).is_none(),
        "nothing to do"
    );
}

#[test]
fn a_stale_record_never_overwrites_a_newer_one() {
    let store = crate::store::memory::MemoryStore::new();
    let mut b = book(1, Some(20), Some(50));
    let mut c = 0;
    // Two turns copy the record under the lock, then reach the store in the other order.
    let older = b
        .reserve(&[0], Spread::InOrder, &mut c, NOON)
        .unwrap()
        .persist;
    let newer = b.hold_daily(0, NOON + 1);
    assert!(newer.1.version > older.1.version);
    write_newer(&store, &newer.0, &newer.1).unwrap();
    write_newer(&store, &older.0, &older.1).unwrap();
    let stored: AccountRecord = store::get_json(&store, NS, &newer.0).unwrap().unwrap();
    assert_eq!(stored, newer.1);
    // A reloaded book continues from the stored version, so its writes are not mistaken for stale.
    let mut again = book(1, Some(20), Some(50));
    again.load(&store);
    let next = again.succeeded(0, 0, NOON + DAY_MS).unwrap();
    write_newer(&store, &next.0, &next.1).unwrap();
    let stored: AccountRecord = store::get_json(&store, NS, &next.0).unwrap().unwrap();
    assert_eq!(stored.hold, None);
}

#[test]
fn soonest_minute_free_ignores_accounts_out_for_the_day() {
    let mut b = book(3, Some(1), Some(1));
    let mut c = 0;
    b.reserve(&[0], Spread::InOrder, &mut c, NOON).unwrap(); // full for the minute and the day
    b.hold_rate_limited(1, NOON + 4_000, false);
    b.hold_rate_limited(2, NOON + 9_000, false);
    assert_eq!(b.soonest_minute_free(&[0, 1, 2], NOON), Some(NOON + 4_000));
    assert_eq!(b.soonest_minute_free(&[0, 2], NOON), Some(NOON + 9_000));
    assert_eq!(b.soonest_minute_free(&[0], NOON), None);
}

#[test]
fn the_daily_limit_is_inferred_from_the_free_tier_flag() {
    assert_eq!(free_daily_limit(Some(7), Some(true)), Some(7));
    assert_eq!(free_daily_limit(None, Some(true)), Some(50));
    assert_eq!(free_daily_limit(None, Some(false)), Some(1000));
    assert_eq!(free_daily_limit(None, None), None);
}
