//! Rendering shared by the platform adapters: splitting long replies on safe boundaries (never inside a
//! code block or a UTF-8 character) and Markdown handling.
