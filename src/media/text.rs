//! Text files people send (txt, md, code, csv, json): what counts as one, and how it enters a prompt —
//! fenced, under its name, so the model can tell the file from the question.

use super::MediaError;
use crate::domain::AttachmentKind;

/// File-name endings read as text. Code, data and notes; anything else goes by its media type.
const TEXT_EXTENSIONS: [&str; 40] = [
    "txt", "md", "markdown", "rst", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml", "ini",
    "cfg", "conf", "log", "xml", "html", "css", "sql", "sh", "bash", "zsh", "py", "rs", "go", "c",
    "h", "cpp", "hpp", "java", "kt", "js", "ts", "tsx", "jsx", "rb", "php", "swift", "lua", "diff",
];

/// What an attachment named `name` announced as `media_type` is, for the adapters: an image
/// (`image/*`), a text file (by type or name), or something else.
pub fn kind_of(name: Option<&str>, media_type: Option<&str>) -> AttachmentKind {
    let media_type = media_type.map(str::to_ascii_lowercase).unwrap_or_default();
    let media_type = media_type.split(';').next().unwrap_or("").trim();
    if media_type.starts_with("image/") {
        return AttachmentKind::Image;
    }
    let textual_type = media_type.starts_with("text/")
        || matches!(
            media_type,
            "application/json"
                | "application/x-ndjson"
                | "application/xml"
                | "application/toml"
                | "application/x-sh"
        );
    let textual_name = name
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(_, ext)| TEXT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    if textual_type || textual_name {
        AttachmentKind::Text
    } else {
        AttachmentKind::Other
    }
}

/// The prompt text for the text file `name` with `bytes`: fenced under its name. Not UTF-8, or holding
/// NUL bytes, is a binary file and [`MediaError::Unsupported`].
pub fn prompt_text(name: &str, bytes: &[u8]) -> Result<String, MediaError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| MediaError::Unsupported("a binary file".into()))?;
    // A fence longer than any backtick run inside keeps the file's own fences from closing ours.
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    Ok(format!(
        "File `{name}`:\n{fence}\n{}\n{fence}",
        text.trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_type_then_name() {
        assert_eq!(kind_of(None, Some("image/png")), AttachmentKind::Image);
        assert_eq!(kind_of(Some("a.rs"), None), AttachmentKind::Text);
        assert_eq!(
            kind_of(Some("data.CSV"), Some("application/octet-stream")),
            AttachmentKind::Text
        );
        assert_eq!(
            kind_of(Some("x"), Some("text/plain; charset=utf-8")),
            AttachmentKind::Text
        );
        assert_eq!(
            kind_of(Some("r.pdf"), Some("application/pdf")),
            AttachmentKind::Other
        );
    }

    #[test]
    fn text_files_are_fenced_under_their_name_and_binaries_refused() {
        let t = prompt_text("notes.md", b"\xEF\xBB\xBF# hi\n```rust\nx\n```\n").unwrap();
        assert!(t.starts_with("File `notes.md`:\n````\n# hi"), "{t}");
        assert!(t.ends_with("```\n````"), "{t}");
        assert!(prompt_text("a.bin", b"ab\0cd").is_err());
        assert!(prompt_text("a.txt", &[0xff, 0xfe]).is_err());
    }
}
