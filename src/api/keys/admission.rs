//! Admission for one key: an **atomic reservation** of every limit at once (requests per minute,
//! requests and tokens per UTC day, requests in flight) under one mutex, so N concurrent requests on a
//! limit of 10 admit exactly 10 — there is no check-then-increment window. Tokens are reserved from the
//! request's cap (or a default) and settled with the real usage afterwards (TensorZero's "consume
//! tickets, return the unused" pattern; LiteLLM's read-then-add lets every concurrent request through).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{next_utc_midnight, utc_day};

/// The per-minute window: a sliding 60 s, so a burst at :59 cannot be followed by another at :00.
const MINUTE_MS: i64 = 60_000;

/// A key's limits; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Requests per sliding minute.
    pub rpm: Option<u32>,
    /// Requests per UTC day.
    pub daily_requests: Option<u64>,
    /// Tokens (prompt + completion) per UTC day.
    pub daily_tokens: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Requests per minute.
    Rpm,
    /// Requests per day.
    DailyRequests,
    /// Tokens per day.
    DailyTokens,
    /// Requests in flight.
    Concurrency,
}

impl Which {
    /// How the refusal names it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rpm => "requests per minute",
            Self::DailyRequests => "requests per day",
            Self::DailyTokens => "tokens per day",
            Self::Concurrency => "concurrent requests",
        }
    }
}

/// A refused reservation: which limit, and when asking again may succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The limit reached.
    pub which: Which,
    /// The limit's value.
    pub limit: u64,
    /// How long until it frees (for concurrency: a short guess, since it frees when an answer ends).
    pub retry_after: Duration,
}

/// What `x-ratelimit-*` headers report: the request limit (per minute if set, else per day) and the
/// daily token limit, with what is left and when each resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `(limit, remaining, reset)` for requests, if limited.
    pub requests: Option<(u64, u64, Duration)>,
    /// `(limit, remaining, reset)` for tokens, if limited.
    pub tokens: Option<(u64, u64, Duration)>,
}

/// A request admitted: what it holds until [`Limiter::settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The UTC day it was admitted on (a settlement after midnight leaves the new day alone).
    pub day: i64,
    /// Tokens reserved.
    pub tokens: u64,
}

/// A concurrency refusal cannot know when an answer ends; one second is a polite retry pace.
const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Counters {
    /// Admission times (ms) within the last minute, oldest first.
    minute: VecDeque<i64>,
    day: i64,
    day_requests: u64,
    day_tokens: u64,
    in_flight: u32,
}

impl Counters {
    fn roll(&mut self, now_ms: i64) {
        let today = utc_day(now_ms);
        if today != self.day {
            self.day = today;
            self.day_requests = 0;
            self.day_tokens = 0;
        }
        while self
            .minute
            .front()
            .is_some_and(|&t| t <= now_ms - MINUTE_MS)
        {
            self.minute.pop_front();
        }
    }
}

/// One key's counters behind one mutex.
#[derive(Debug, Default)]
pub struct Limiter {
    counters: Mutex<Counters>,
}

fn ms(d: i64) -> Duration {
    Duration::from_millis(u64::try_from(d.max(0)).unwrap_or(0))
}

impl Limiter {
    /// A limiter that starts the day with `requests` and `tokens` already used (from the ledger).
    pub fn resuming(now_ms: i64, requests: u64, tokens: u64) -> Self {
        Self {
            counters: Mutex::new(Counters {
                day: utc_day(now_ms),
                day_requests: requests,
                day_tokens: tokens,
                ..Counters::default()
            }),
        }
    }

    /// The counters, locked and rolled forward to `now_ms`.
    fn at(&self, now_ms: i64) -> std::sync::MutexGuard<'_, Counters> {
        let mut c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.roll(now_ms);
        c
    }

    /// Checks and takes every limit at once. `want` tokens are reserved; when fewer remain for the day
    /// but more than `floor` (the prompt's own estimate), the rest of the budget is reserved instead, so
    /// a default cap does not refuse a small request on a small budget.
    pub fn reserve(
        &self,
        limits: &Limits,
        now_ms: i64,
        want: u64,
        floor: u64,
    ) -> Result<Held, Refusal> {
        let mut c = self.at(now_ms);
        let midnight = ms(next_utc_midnight(now_ms) - now_ms);
        if let Some(limit) = limits.concurrency {
            if c.in_flight >= limit {
                return Err(Refusal {
                    which: Which::Concurrency,
                    limit: limit.into(),
                    retry_after: CONCURRENCY_RETRY,
                });
            }
        }
        if let Some(limit) = limits.rpm {
            if c.minute.len() >= limit as usize {
                let oldest = c.minute.front().copied().unwrap_or(now_ms);
                return Err(Refusal {
                    which: Which::Rpm,
                    limit: limit.into(),
                    retry_after: ms(oldest + MINUTE_MS - now_ms),
                });
            }
        }
        if let Some(limit) = limits.daily_requests {
            if c.day_requests >= limit {
                return Err(Refusal {
                    which: Which::DailyRequests,
                    limit,
                    retry_after: midnight,
                });
            }
        }
        let mut tokens = want;
        if let Some(limit) = limits.daily_tokens {
            let left = limit.saturating_sub(c.day_tokens);
            if left == 0 || left < floor.max(1) {
                return Err(Refusal {
                    which: Which::DailyTokens,
                    limit,
                    retry_after: midnight,
                });
            }
            tokens = tokens.min(left);
        }
        c.in_flight += 1;
        c.minute.push_back(now_ms);
        c.day_requests += 1;
        c.day_tokens += tokens;
        Ok(Held { day: c.day, tokens })
    }

    /// Returns a reservation: the request is no longer in flight and its reserved tokens are replaced
    /// by `used` (on the day it was admitted; after midnight the new day is left alone).
    pub fn settle(&self, held: Held, used: u64, now_ms: i64) {
        let mut c = self.at(now_ms);
        c.in_flight = c.in_flight.saturating_sub(1);
        if c.day == held.day {
            c.day_tokens = c.day_tokens.saturating_sub(held.tokens) + used;
        }
    }

    /// What the rate-limit headers say now.
    pub fn snapshot(&self, limits: &Limits, now_ms: i64) -> Snapshot {
        let c = self.at(now_ms);
        let midnight = ms(next_utc_midnight(now_ms) - now_ms);
        let requests = if let Some(limit) = limits.rpm {
            let used = c.minute.len() as u64;
            let reset = c
                .minute
                .front()
                .map_or(Duration::ZERO, |&t| ms(t + MINUTE_MS - now_ms));
            Some((
                u64::from(limit),
                u64::from(limit).saturating_sub(used),
                reset,
            ))
        } else {
            limits
                .daily_requests
                .map(|limit| (limit, limit.saturating_sub(c.day_requests), midnight))
        };
        let tokens = limits
            .daily_tokens
            .map(|limit| (limit, limit.saturating_sub(c.day_tokens), midnight));
        Snapshot { requests, tokens }
    }

    /// Requests and tokens used today (reserved included), and requests in flight.
    pub fn today(&self, now_ms: i64) -> (u64, u64, u32) {
        let c = self.at(now_ms);
        (c.day_requests, c.day_tokens, c.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::DAY_MS;

    const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

    #[test]
    fn concurrent_reservations_admit_exactly_the_limit() {
        let limiter = Arc::new(Limiter::default());
        let limits = Limits {
            rpm: Some(10),
            ..Limits::default()
        };
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..100)
                .map(|_| {
                    let limiter = limiter.clone();
                    let limits = limits.clone();
                    s.spawn(move || limiter.reserve(&limits, NOON, 10, 1).is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(admitted, 10);
        let refused = limiter.reserve(&limits, NOON + 1_000, 10, 1).unwrap_err();
        assert_eq!(refused.which, Which::Rpm);
        assert_eq!(refused.retry_after, Duration::from_secs(59));
        assert!(limiter.reserve(&limits, NOON + MINUTE_MS, 10, 1).is_ok());
    }

    #[test]
    fn tokens_are_reserved_then_settled_with_real_usage_and_reset_at_midnight() {
        let limiter = Limiter::default();
        let limits = Limits {
            daily_tokens: Some(1_000),
            ..Limits::default()
        };
        let a = limiter.reserve(&limits, NOON, 800, 10).unwrap();
        assert_eq!(a.tokens, 800);
        // Only 200 left: a request wanting 500 gets the rest of the budget.
        let b = limiter.reserve(&limits, NOON, 500, 10).unwrap();
        assert_eq!(b.tokens, 200);
        assert_eq!(
            limiter.reserve(&limits, NOON, 5, 1).unwrap_err().which,
            Which::DailyTokens
        );
        limiter.settle(a, 100, NOON);
        limiter.settle(b, 50, NOON);
        assert_eq!(limiter.today(NOON), (2, 150, 0));
        let snap = limiter.snapshot(&limits, NOON);
        assert_eq!(
            snap.tokens,
            Some((1_000, 850, Duration::from_millis((DAY_MS / 2) as u64)))
        );
        assert_eq!(limiter.today(NOON + DAY_MS), (0, 0, 0));
    }

    #[test]
    fn concurrency_frees_when_a_request_settles() {
        let limiter = Limiter::default();
        let limits = Limits {
            concurrency: Some(1),
            daily_requests: Some(5),
            ..Limits::default()
        };
        let a = limiter.reserve(&limits, NOON, 1, 1).unwrap();
        assert_eq!(
            limiter.reserve(&limits, NOON, 1, 1).unwrap_err().which,
            Which::Concurrency
        );
        limiter.settle(a, 1, NOON);
        assert!(limiter.reserve(&limits, NOON, 1, 1).is_ok());
        let snap = limiter.snapshot(&limits, NOON);
        assert_eq!(snap.requests.map(|r| (r.0, r.1)), Some((5, 3)));
    }
}
