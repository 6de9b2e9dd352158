//! The conversation core: turns an [`Inbound`] into a command reply or an LLM turn, enforcing access and
//! limits, keeping one conversation's turns in order while different conversations run concurrently, and
//! writing history. Knows no platform, provider or storage crate: it talks to [`LlmRouter`] and [`Store`].

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::{Inbound, ReplyStream};
use crate::router::LlmRouter;
use crate::store::Store;

/// A command every platform offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// The name without the slash (`reset`).
    pub name: &'static str,
    /// Argument synopsis (`[name]`), empty if none.
    pub args: &'static str,
    /// One line for `/help`, `setMyCommands` and Discord slash commands.
    pub description: &'static str,
}

/// The conversation core, shared by every adapter.
pub struct Core {
    _private: (),
}

impl Core {
    /// A core over `store` and `router` with `config`.
    pub fn new(
        _config: Arc<Config>,
        _store: Arc<dyn Store>,
        _router: Arc<dyn LlmRouter>,
        _clock: SharedClock,
    ) -> Arc<Self> {
        todo!("landing shortly")
    }

    /// Handles one inbound message. `None`: the message is ignored (unaddressed in a group, or from a
    /// refused user who was already told once). Otherwise the stream ends with `Finished` or `Failed`.
    /// Turns of one conversation are answered in the order `handle` was called.
    pub fn handle(self: &Arc<Self>, _inbound: Inbound) -> Option<ReplyStream> {
        todo!()
    }

    /// The commands, for `/help`, Telegram's `setMyCommands` and Discord slash commands.
    pub fn commands() -> &'static [CommandInfo] {
        &[]
    }

    /// Applies a reloaded configuration (allow lists, admins, prompts, limits).
    pub fn reload(&self, _config: Arc<Config>) {}

    /// Stops taking new turns: new messages get a "restarting" reply.
    pub fn begin_shutdown(&self) {}

    /// Waits for in-flight turns; after `grace` the rest end with a "restarting" note. Returns at once
    /// if nothing is in flight.
    pub async fn drain(&self, _grace: Duration) {}

    /// Turns in flight right now.
    pub fn in_flight(&self) -> usize {
        0
    }
}
