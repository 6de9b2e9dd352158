//! OpenRouter's account limits: the daily free quota per account (reset at 00:00 UTC on the injected
//! clock, every chat request counted, failed ones included) and the sliding per-minute window, with the
//! 429 answers both give.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::Response;

use super::{error, set_header};
use crate::clock::{next_utc_midnight, utc_day};
use crate::sim::server::lock;

/// The per-minute window.
pub(super) const MINUTE_MS: i64 = 60_000;

/// The quota day and minute window of every account seen so far.
#[derive(Default)]
pub(super) struct Accounts(Mutex<HashMap<String, AccountState>>);

#[derive(Default)]
struct AccountState {
    day: i64,
    used: u32,
    /// Times (ms) of accepted chat requests in the last minute.
    minute: VecDeque<i64>,
}

/// What an account's limits said about one chat request, before it was counted.
pub(super) struct Admission {
    /// Requests of the day before this one.
    pub used_before: u32,
    /// When the minute window is full: the time (ms) of its oldest request.
    pub minute_blocked: Option<i64>,
}

impl Accounts {
    /// Counts a chat request of `account` at `now` toward the day (always, as OpenRouter does) and the
    /// minute window (only when it has room).
    pub fn admit(&self, account: &str, now: i64, per_minute_limit: Option<u32>) -> Admission {
        let mut accounts = lock(&self.0);
        let state = accounts.entry(account.to_owned()).or_default();
        let today = utc_day(now);
        if state.day != today {
            state.day = today;
            state.used = 0;
        }
        let used_before = state.used;
        state.used = state.used.saturating_add(1);
        while state.minute.front().is_some_and(|t| now - *t >= MINUTE_MS) {
            state.minute.pop_front();
        }
        let minute_blocked = match per_minute_limit {
            Some(limit) if state.minute.len() >= limit as usize => state.minute.front().copied(),
            _ => {
                state.minute.push_back(now);
                None
            }
        };
        Admission {
            used_before,
            minute_blocked,
        }
    }

    /// Requests `account` made in the UTC day of `now`.
    pub fn used_today(&self, account: &str, now: i64) -> u32 {
        lock(&self.0)
            .get(account)
            .filter(|a| a.day == utc_day(now))
            .map_or(0, |a| a.used)
    }
}

/// The limits one caller's chat request is answered under.
pub(super) struct Limits {
    /// Now (epoch ms) on the simulator's clock.
    pub now: i64,
    /// The account's daily free quota.
    pub quota: u32,
    /// Chat requests per account per sliding minute.
    pub per_minute_limit: Option<u32>,
}

impl Limits {
    /// The 429 of a spent daily quota, reset at the next UTC midnight.
    pub fn daily_429(&self) -> Response {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
        );
        set_header(&mut r, "X-RateLimit-Limit", &self.quota.to_string());
        set_header(&mut r, "X-RateLimit-Remaining", "0");
        set_header(
            &mut r,
            "X-RateLimit-Reset",
            &next_utc_midnight(self.now).to_string(),
        );
        r
    }

    /// The 429 of a full minute window that frees up at `reset_at` (epoch ms).
    pub fn minute_429(&self, reset_at: i64) -> Response {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded: free-models-per-min.",
        );
        let secs = ((reset_at - self.now).max(0) + 999) / 1000;
        set_header(&mut r, "Retry-After", &secs.max(1).to_string());
        set_header(
            &mut r,
            "X-RateLimit-Limit",
            &self.per_minute_limit.unwrap_or(0).to_string(),
        );
        set_header(&mut r, "X-RateLimit-Remaining", "0");
        set_header(&mut r, "X-RateLimit-Reset", &reset_at.to_string());
        r
    }

    /// The 429 of a full minute window for `admission`, or the spent daily quota; `None` when both
    /// have room.
    pub fn refusal(&self, admission: &Admission) -> Option<Response> {
        if admission.used_before >= self.quota {
            return Some(self.daily_429());
        }
        admission
            .minute_blocked
            .map(|oldest| self.minute_429(oldest + MINUTE_MS))
    }
}
