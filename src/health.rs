//! Liveness and status of switchboard's own loops: each loop beats, the watchdog pings systemd only while
//! every registered loop is beating, and the status line (`STATUS=` for systemd, `/status` for users) is
//! assembled from what each component last reported. Upstream outages do not stop a loop's beat.
//!
//! Three kinds of component: an adapter's loop ([`Health::component`]: beats and shows a status), a
//! status that has no loop of its own ([`Health::status_only`]: never stale), and a loop of the process
//! itself ([`Health::internal`]: beats, but has nothing to tell users, so it stays out of the status).
//!
//! A loop that still beats but whose calls keep failing (Telegram's `getUpdates` erroring for minutes)
//! is alive, not healthy: [`FailureStreak`] tells when the failures have lasted [`DEGRADED_AFTER`], and
//! [`ComponentHandle::set_degraded`] marks it so `STATUS=` and [`Health::degraded`] say so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long a loop's calls must keep failing before it is reported as degraded. A network blip or a
/// Bot API restart recovers within a minute under the loops' backoff (at most 30 s between tries);
/// failing for two minutes means intake is down and an operator should hear of it.
pub const DEGRADED_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Component {
    status: String,
    /// The loop beats, but its work keeps failing ([`ComponentHandle::set_degraded`]).
    degraded: bool,
    last_beat: Instant,
    /// Components that only report status (no loop of their own) are never stale.
    beats: bool,
    /// Whether the status appears in [`Health::statuses`] and [`Health::summary`].
    shown: bool,
}

/// How a new component is watched: whether it must keep beating and whether its status is shown.
#[derive(Clone, Copy, Debug)]
struct Watch {
    beats: bool,
    shown: bool,
}

/// The registry of components; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, Component>>>,
}

/// One component's handle for beating and reporting status.
#[derive(Clone, Debug)]
pub struct ComponentHandle {
    name: String,
    health: Health,
}

impl Health {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or re-registers) a component with a loop that must keep beating.
    pub fn component(&self, name: &str) -> ComponentHandle {
        self.register(
            name,
            Watch {
                beats: true,
                shown: true,
            },
        )
    }

    /// Registers a component that only reports status and is never considered stale.
    pub fn status_only(&self, name: &str) -> ComponentHandle {
        self.register(
            name,
            Watch {
                beats: false,
                shown: true,
            },
        )
    }

    /// Registers a loop of the process itself (the daemon's main loop): it must keep beating like an
    /// adapter's, but its status is not shown to operators or users.
    pub fn internal(&self, name: &str) -> ComponentHandle {
        self.register(
            name,
            Watch {
                beats: true,
                shown: false,
            },
        )
    }

    fn register(&self, name: &str, watch: Watch) -> ComponentHandle {
        let Watch { beats, shown } = watch;
        let mut map = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(
            name.to_owned(),
            Component {
                status: "starting".into(),
                degraded: false,
                last_beat: Instant::now(),
                beats,
                shown,
            },
        );
        ComponentHandle {
            name: name.to_owned(),
            health: self.clone(),
        }
    }

    /// Removes a component (its loop ended on purpose).
    pub fn remove(&self, name: &str) {
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// Names of beating components whose last beat is older than `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<String> {
        let now = Instant::now();
        let map = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, c)| c.beats && now.saturating_duration_since(c.last_beat) > max_age)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every shown component's name and current status, in name order.
    pub fn statuses(&self) -> Vec<(String, String)> {
        let map = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, c)| c.shown)
            .map(|(n, c)| (n.clone(), c.status.clone()))
            .collect()
    }

    /// Names of the components currently reported degraded, in name order.
    pub fn degraded(&self) -> Vec<String> {
        let map = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, c)| c.degraded)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `name: status` pairs of the shown components joined by `, `, in name order.
    pub fn summary(&self) -> String {
        self.statuses()
            .iter()
            .map(|(n, s)| format!("{n}: {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ComponentHandle {
    /// Records that the component's loop is alive.
    pub fn beat(&self) {
        self.with(|c| c.last_beat = Instant::now());
    }

    /// Sets the component's one-phrase status (e.g. `polling`, `connected`), clears a degraded mark,
    /// and counts as a beat.
    pub fn set_status(&self, status: impl Into<String>) {
        let status = status.into();
        self.with(|c| {
            c.status = status;
            c.degraded = false;
            c.last_beat = Instant::now();
        });
    }

    /// Marks the component degraded: its loop is alive (this counts as a beat) but its work keeps
    /// failing. The status shows `degraded: {why}` until the next [`Self::set_status`].
    pub fn set_degraded(&self, why: impl std::fmt::Display) {
        let status = format!("degraded: {why}");
        self.with(|c| {
            c.status = status;
            c.degraded = true;
            c.last_beat = Instant::now();
        });
    }

    /// Whether the component is currently marked degraded.
    pub fn is_degraded(&self) -> bool {
        let mut degraded = false;
        self.with(|c| degraded = c.degraded);
        degraded
    }

    fn with(&self, f: impl FnOnce(&mut Component)) {
        let mut map = self
            .health
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get_mut(&self.name) {
            f(c);
        }
    }
}

/// How long a loop's calls have been failing in a row (tokio time, so paused-time tests can drive it).
#[derive(Debug, Default)]
pub struct FailureStreak {
    since: Option<Instant>,
    failures: u32,
}

impl FailureStreak {
    /// Records a failure; returns how long the failures have lasted (zero for the first).
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert_with(Instant::now);
        Instant::now().saturating_duration_since(since)
    }

    /// Records a success; returns the number of failures it ended (0 if none were in a row).
    pub fn succeeded(&mut self) -> u32 {
        self.since = None;
        std::mem::take(&mut self.failures)
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_loop_goes_stale_and_status_only_never_does() {
        let health = Health::new();
        let poller = health.component("telegram");
        let _router = health.status_only("router");
        poller.set_status("polling");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            health.stale(Duration::from_secs(5)),
            vec!["telegram".to_string()]
        );
        poller.beat();
        assert!(health.stale(Duration::from_secs(5)).is_empty());
        assert_eq!(health.summary(), "router: starting, telegram: polling");
    }

    #[tokio::test(start_paused = true)]
    async fn an_internal_loop_goes_stale_but_never_shows_in_the_status() {
        let health = Health::new();
        let main_loop = health.internal("daemon");
        let poller = health.component("telegram");
        poller.set_status("polling");
        assert_eq!(health.summary(), "telegram: polling");
        assert_eq!(health.statuses().len(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            health.stale(Duration::from_secs(5)),
            vec!["daemon".to_string(), "telegram".to_string()]
        );
        main_loop.beat();
        assert_eq!(
            health.stale(Duration::from_secs(5)),
            vec!["telegram".to_string()]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_for_minutes_degrade_and_a_success_clears_it() {
        let health = Health::new();
        let poller = health.component("telegram");
        poller.set_status("polling");
        let mut streak = FailureStreak::default();
        assert_eq!(streak.failed(), Duration::ZERO);
        tokio::time::advance(DEGRADED_AFTER / 2).await;
        assert_eq!(streak.failed(), DEGRADED_AFTER / 2);
        assert!(health.degraded().is_empty());
        tokio::time::advance(DEGRADED_AFTER).await;
        let failing_for = streak.failed();
        assert!(failing_for >= DEGRADED_AFTER);
        poller.set_degraded("getUpdates failing for 3 min");
        assert!(poller.is_degraded());
        assert_eq!(health.degraded(), ["telegram"]);
        assert_eq!(
            health.summary(),
            "telegram: degraded: getUpdates failing for 3 min"
        );
        // Degraded is not dead: the mark counts as a beat.
        assert!(health.stale(Duration::from_secs(5)).is_empty());
        assert_eq!(streak.succeeded(), 3);
        assert!(!streak.is_failing());
        poller.set_status("polling");
        assert!(health.degraded().is_empty());
        assert_eq!(health.summary(), "telegram: polling");
        assert_eq!(
            streak.failed(),
            Duration::ZERO,
            "a new streak starts afresh"
        );
    }
}
