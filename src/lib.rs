//! switchboard: large language models in Discord, Telegram and a terminal, answered free tier first.
//!
//! One message, one way through (arrows point inward; adapters at the edge):
//!
//! ```text
//!  Telegram ─┐                                            ┌─ OpenRouter (free tier, N accounts)
//!  Discord  ─┼─► platforms ─► core ─► router ─► providers ─┼─ Ollama Cloud (paid tier, RC2)
//!  terminal ─┘                 │        │                  └─ local / any OpenAI-compatible
//!                              ▼        ▼
//!                           store (history, quota state: one sled Db)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`domain`] | the shared vocabulary: `Inbound`, `ReplyEvent`, identifiers |
//! | [`config`] | TOML + environment + credentials, validated once at start-up |
//! | [`core`] | inbound → command or turn; access, limits, ordering, context |
//! | [`generation`] | images, tools, sampling and output format: what a request may ask beyond text |
//! | [`context`] | fitting history into a model's window |
//! | [`router`] | tiers, accounts, quotas, cooldowns, fallback (the [`router::LlmRouter`] seam) |
//! | [`providers`] | OpenRouter/OpenAI-compatible and Ollama wire clients and stream parsers |
//! | [`store`] | the [`store::HistoryStore`] and [`store::StateStore`] seams: sled and in-memory |
//! | [`platforms`] | Telegram, Discord and terminal adapters; shared rendering |
//! | [`api`] | the local LLM API: Ollama- and OpenAI-compatible HTTP over the same router |
//! | [`text`] | small wording helpers (counts with their plural) |
//! | [`sim`] | simulated OpenRouter and Ollama servers for the demo, tests and benchmarks |
//! | [`daemon`] | wiring, signals, systemd notify/watchdog, reload |
//! | [`app`] | the composition root: config → store → router → core, for every command |
//! | [`doctor`] | `switchboard check`: the configuration doctor |
//! | [`cli`] | the command line |
//! | [`body`] | reading HTTP bodies under a byte cap |

pub mod api;
pub mod app;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod core;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod exit;
pub mod generation;
pub mod health;
pub mod logging;
pub mod platforms;
pub mod providers;
pub mod router;
pub mod secrets;
pub mod sim;
pub mod store;
pub mod text;
