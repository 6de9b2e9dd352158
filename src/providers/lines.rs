//! Incremental line splitting over raw bytes, shared by the SSE and NDJSON parsers.
//!
//! Lines end at `\n`, `\r\n` or a lone `\r` (the SSE rule), recognised even when the terminator is split
//! across two chunks. A line is handed out only when complete, so UTF-8 characters split between chunks
//! are always whole by then.

/// The longest line accepted. A real chunk is a few KiB; 4 MiB bounds memory if an upstream (or a hostile
/// proxy) streams bytes without ever ending a line.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// The line is longer than [`MAX_LINE_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// A byte-level line splitter that can be fed arbitrary chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes of the unfinished line.
    partial: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` opening the next chunk belongs to that terminator.
    skip_lf: bool,
}

impl LineSplitter {
    /// Feeds `chunk`, calling `on_line` with every line completed by it (without its terminator).
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.partial.is_empty() {
                on_line(&chunk[..pos]);
            } else {
                self.partial.extend_from_slice(&chunk[..pos]);
                if self.partial.len() > MAX_LINE_BYTES {
                    return Err(LineTooLong);
                }
                on_line(&self.partial);
                self.partial.clear();
            }
            let terminator = chunk[pos];
            chunk = &chunk[pos + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        Ok(())
    }

    /// Whether bytes of an unfinished line are waiting (at end of stream: the last line was cut).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Takes the unfinished line (for formats where the last line may lack its terminator).
    pub fn take_partial(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }

    /// Bytes held for the unfinished line (its allocation, not just its length): what a stream that
    /// never ends a line can make us keep. Never much more than [`MAX_LINE_BYTES`] plus one chunk.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.capacity()
    }

    /// Drops the unfinished line and its allocation (the stream failed; nothing more will be parsed).
    pub fn release(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(String::from_utf8(l.to_vec()).unwrap()))
                .unwrap();
        }
        out
    }

    #[test]
    fn all_terminators_even_split() {
        assert_eq!(split(&[b"a\r\nb\rc\nd"]), ["a", "b", "c"]);
        assert_eq!(split(&[b"a\r", b"\nb\r", b"c\n"]), ["a", "b", "c"]);
        assert_eq!(split(&[b"a\r", b"", b"\n\n"]), ["a", ""]);
    }

    #[test]
    fn huge_line_is_refused() {
        let mut s = LineSplitter::default();
        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(s.push(&big, |_| {}), Err(LineTooLong));
    }
}
