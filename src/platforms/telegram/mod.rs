//! The Telegram adapter.

pub mod format;
