//! The faults people met (issues 11 and 12): a 402 warned once with the key's fingerprint, a failing
//! free key that must not cost a paid request while another free key is healthy, and a free account
//! running out told to the user and the operator.

use super::*;
use crate::secrets::fingerprint_str;

/// Log lines containing every one of `needles`.
fn lines_with(logs: &Logs, needles: &[&str]) -> usize {
    String::from_utf8_lossy(&logs.0.lock().unwrap())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[tokio::test]
async fn a_402_is_warned_once_per_key_with_its_fingerprint_until_the_key_recovers() {
    let rig = rig_with(config(0), &["k1", "k2"], &[]);
    let (logs, _guard) = Logs::capture();
    const WARNING: &str = "OUT OF CREDITS (HTTP 402)";
    let fp = fingerprint_str("k1");
    let no_credits = || Act::Fail(ProviderError::PaymentRequired);
    // Two turns in flight on k1 both get its 402: one warning.
    two_turns_fail_on_k1_at_once(&rig, no_credits).await;
    assert_eq!(rig.free.keys(), ["k1", "k1", "k2", "k2"]);
    assert_eq!(lines_with(&logs, &["WARN", WARNING]), 1);
    assert_eq!(
        lines_with(&logs, &["WARN", WARNING, "OPENROUTER_API_KEY_1", &fp]),
        1,
        "names the key and its fingerprint"
    );
    // The cooldown ends and k1 is still out of credits: the same outage, no new warning.
    rig.clock.advance(6 * 3_600_000);
    rig.free.on_key("k1", no_credits());
    assert!(finished(&ask(&rig.router, request("c", "hi")).await));
    assert_eq!(rig.free.keys().last().unwrap(), "k2");
    assert_eq!(lines_with(&logs, &[WARNING]), 1);
    // k1 answers again after the next cooldown; a later 402 is news again.
    rig.clock.advance(6 * 3_600_000);
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(rig.free.keys().last().unwrap(), "k1");
    rig.free.on_key("k1", no_credits());
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(lines_with(&logs, &["WARN", WARNING, &fp]), 2);
    // A reload arms the warning again too.
    rig.router.reload(&rig.config).unwrap();
    rig.clock.advance(6 * 3_600_000);
    rig.free.on_key("k1", no_credits());
    ask(&rig.router, request("c", "hi")).await;
    assert_eq!(lines_with(&logs, &["WARN", WARNING, &fp]), 3);
}

#[tokio::test]
async fn a_5xx_or_a_stall_on_one_free_key_is_answered_by_the_other_free_key() {
    for error in [
        ProviderError::Upstream { status: 502 },
        ProviderError::Stalled,
        ProviderError::Timeout,
    ] {
        // One free model: the same model goes to the other key.
        let mut c = config(0);
        c.openrouter.free_models = vec!["a:free".into()];
        let rig = rig_with(c, &["k1", "k2"], &["p1"]);
        rig.free.on_key("k1", Act::Fail(error.clone()));
        let ev = ask(&rig.router, request("c", "hi")).await;
        assert_eq!(
            started(&ev),
            ("free".into(), "a:free@real".into()),
            "{error}"
        );
        assert_eq!(rig.free.keys(), ["k1", "k2"], "{error}");
        assert!(rig.paid.calls().is_empty(), "{error}: no paid request");
        assert_eq!(rig.router.status().tiers[0].accounts[0].state, "ready");
        // Two free models: the next model goes to the other key.
        let rig = rig_with(config(0), &["k1", "k2"], &["p1"]);
        rig.free.on_key("k1", Act::Fail(error.clone()));
        let ev = ask(&rig.router, request("c", "hi")).await;
        assert_eq!(started(&ev).0, "free", "{error}");
        let calls: Vec<_> = rig
            .free
            .calls()
            .into_iter()
            .map(|c| (c.key, c.model))
            .collect();
        assert_eq!(
            calls,
            [
                ("k1".into(), "a:free".into()),
                ("k2".into(), "openrouter/free".into())
            ],
            "{error}"
        );
        assert!(rig.paid.calls().is_empty(), "{error}: no paid request");
    }
}

#[tokio::test]
async fn when_every_free_key_fails_the_paid_tier_answers_after_one_try_each() {
    let mut c = config(0);
    c.openrouter.free_models = vec!["a:free".into()];
    let rig = rig_with(c, &["k1", "k2", "k3"], &["p1"]);
    for k in ["k1", "k2", "k3"] {
        rig.free.always(k, ProviderError::Upstream { status: 503 });
    }
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(started(&ev).0, "paid");
    assert_eq!(rig.free.keys(), ["k1", "k2", "k3"], "each free key once");
    assert_eq!(rig.paid.calls().len(), 1);
    // The paid notice says why, honestly.
    assert_eq!(
        ev[0],
        ReplyEvent::Notice(
            "The free models are not answering right now — answering with gpt-oss:120b@real on Ollama Cloud."
                .into()
        )
    );
}

#[tokio::test]
async fn a_free_account_running_out_is_told_once_per_conversation_and_logged_once() {
    let rig = rig_with(config(3), &["k1", "k2"], &[]);
    let (logs, _guard) = Logs::capture();
    const LOG: &str = "free account is out of free requests for today";
    const NOTICE: &str = "key 1 is out of free requests until 00:00 UTC — moving to key 2.";
    let notices = |ev: &[ReplyEvent]| -> Vec<String> {
        ev.iter()
            .filter_map(|e| match e {
                ReplyEvent::Notice(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    };
    for _ in 0..3 {
        assert!(notices(&ask(&rig.router, request("c", "hi")).await).is_empty());
    }
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert_eq!(ev[0], ReplyEvent::Notice(NOTICE.into()));
    assert!(
        matches!(&ev[1], ReplyEvent::Started(s) if s.key_fingerprint == Some(fingerprint_str("k2")))
    );
    assert!(finished(&ev));
    assert_eq!(lines_with(&logs, &["INFO", LOG]), 1);
    assert_eq!(
        lines_with(
            &logs,
            &[LOG, "OPENROUTER_API_KEY_1", &fingerprint_str("k1")]
        ),
        1,
        "the spent account's label and fingerprint"
    );
    // Once per conversation: not again in this one, once in another; logged once a day.
    let ev = ask(&rig.router, request("c", "hi")).await;
    assert!(finished(&ev));
    assert!(notices(&ev).is_empty());
    let ev = ask(&rig.router, request("d", "hi")).await;
    assert_eq!(notices(&ev), [NOTICE]);
    assert_eq!(lines_with(&logs, &[LOG]), 1);
    assert_eq!(rig.free.keys(), ["k1", "k1", "k1", "k2", "k2", "k2"]);
}

#[test]
fn the_out_of_free_notice_names_accounts_as_users_know_them() {
    use super::super::notices::out_of_free_notice;
    let now = NOON;
    let midnight = crate::clock::next_utc_midnight(now);
    assert_eq!(
        out_of_free_notice("OPENROUTER_API_KEY", midnight, now, "OPENROUTER_API_KEY_2"),
        "key 1 is out of free requests until 00:00 UTC — moving to key 2."
    );
    assert_eq!(
        out_of_free_notice("team", midnight, now, "solo"),
        "team is out of free requests until 00:00 UTC — moving to solo."
    );
}
