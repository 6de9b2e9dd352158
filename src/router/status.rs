//! The router's state as users and operators see it: the [`RouterStatus`] snapshot for `/usage`,
//! `/status` and systemd's `STATUS=` line, and the human state of one account.

use super::accounts::{DayCount, Shared, State};
use super::policy::{Policy, Tier};
use super::quota::{Availability, Hold};
use super::{AccountStatus, RouterStatus, TierStatus};
use crate::clock::{next_utc_midnight, utc_day};

/// `HH:MM:SS` of a UTC timestamp.
fn hms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| "?".into(), |t| t.format("%H:%M:%S").to_string())
}

/// The human state of an account, for `/status` and `/usage`.
pub fn state_text(availability: Availability, now: i64) -> String {
    match availability {
        Availability::Ready => "ready".into(),
        Availability::MinuteFull(until) | Availability::Held(Hold::RateLimited, until) => {
            format!("cooling down until {} UTC", hms(until))
        }
        Availability::Held(Hold::DailyExhausted, until) if until <= next_utc_midnight(now) => {
            "exhausted until 00:00 UTC".into()
        }
        Availability::Held(Hold::DailyExhausted, until) => {
            format!("exhausted until {} UTC", hms(until))
        }
        Availability::Exhausted => "exhausted until 00:00 UTC".into(),
        Availability::Held(Hold::NoCredits, until) => {
            format!("out of credits (402) until {} UTC", hms(until))
        }
        Availability::Rejected(status) => format!("disabled: key rejected ({status})"),
    }
}

impl Shared {
    /// A snapshot of every tier and account under `policy`.
    pub fn status(&self, policy: &Policy) -> RouterStatus {
        let now = self.clock.now_ms();
        let st = self.lock();
        let tiers = policy
            .tiers
            .iter()
            .map(|tier| tier_status(&st, policy, tier, now))
            .collect();
        RouterStatus { tiers }
    }
}

fn tier_status(st: &State, policy: &Policy, tier: &Tier, now: i64) -> TierStatus {
    let today = utc_day(now);
    let accounts = tier
        .accounts
        .iter()
        .map(|&a| account_status(st, a, now))
        .collect();
    let requests_today = if tier.paid {
        if st.paid.day == today {
            st.paid.requests
        } else {
            0
        }
    } else {
        st.tier_requests
            .get(&tier.name.0)
            .filter(|c| c.day == today)
            .map_or(0, |c: &DayCount| c.requests)
    };
    let s = &policy.switches;
    let cap_reached = s.paid_daily_cap > 0 && requests_today >= s.paid_daily_cap;
    TierStatus {
        name: tier.name.clone(),
        enabled: !tier.paid || (!s.free_only && s.paid_enabled && !cap_reached),
        accounts,
        requests_today,
        daily_cap: (tier.paid && s.paid_daily_cap > 0).then_some(s.paid_daily_cap),
        estimated_cost_usd: tier.paid.then_some(if st.paid.day == today {
            st.paid.cost_usd
        } else {
            0.0
        }),
    }
}

fn account_status(st: &State, a: usize, now: i64) -> AccountStatus {
    let acc = &st.book.accounts[a];
    AccountStatus {
        provider: acc.provider.clone(),
        account: acc.label.clone(),
        keys: acc
            .keys
            .iter()
            .filter_map(|&k| st.book.keys[k].fingerprint.clone())
            .collect(),
        requests_left_today: st.book.left_today(a, now),
        daily_limit: st.book.daily_limit(a),
        state: state_text(st.book.availability(a, now), now),
    }
}
