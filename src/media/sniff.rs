//! What a file is, by its first bytes rather than by what the sender or its name claims, and whether an
//! image is whole: a download cut short or a damaged file must not reach a model as a picture.

use super::MediaError;

/// The image types every vision model we route to accepts (OpenAI content parts and Ollama `images`).
pub const SUPPORTED: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A JPEG's end-of-image marker may be followed by a camera's trailer; it must appear within this many
/// bytes of the end. (Inside the scan data 0xFF is always stuffed, so the marker is not found by chance.)
const JPEG_TRAILER_WINDOW: usize = 64 * 1024;

/// The media type of the image in `bytes`. A known type whose structure is broken (truncated, no end
/// marker) is [`MediaError::Corrupt`]; anything else is [`MediaError::Unsupported`] with its name.
pub fn image_type(bytes: &[u8]) -> Result<&'static str, MediaError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let tail = &bytes[bytes.len().saturating_sub(JPEG_TRAILER_WINDOW)..];
        let whole = bytes.len() > 4 && tail.windows(2).any(|w| w == [0xFF, 0xD9]);
        return whole.then_some("image/jpeg").ok_or(MediaError::Corrupt);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let whole = bytes.len() >= 8 + 25 + 12
            && &bytes[12..16] == b"IHDR"
            && &bytes[bytes.len() - 8..bytes.len() - 4] == b"IEND";
        return whole.then_some("image/png").ok_or(MediaError::Corrupt);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        let end = bytes.iter().rposition(|&b| b != 0);
        let whole = bytes.len() > 13 && end.is_some_and(|i| bytes[i] == 0x3B);
        return whole.then_some("image/gif").ok_or(MediaError::Corrupt);
    }
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let whole = declared.saturating_add(8) <= bytes.len() && declared > 4;
        return whole.then_some("image/webp").ok_or(MediaError::Corrupt);
    }
    Err(MediaError::Unsupported(other_type(bytes).to_owned()))
}

/// A name for a type we do not pass on, for the reply.
fn other_type(bytes: &[u8]) -> &'static str {
    let ftyp = bytes.get(4..12);
    if ftyp.is_some_and(|t| {
        t.starts_with(b"ftyp")
            && (t.ends_with(b"heic") || t.ends_with(b"mif1") || t.ends_with(b"heix"))
    }) {
        "HEIC image"
    } else if ftyp.is_some_and(|t| t.starts_with(b"ftypavif")) {
        "AVIF image"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "TIFF image"
    } else if bytes.starts_with(b"BM") {
        "BMP image"
    } else if bytes.starts_with(b"%PDF") {
        "PDF document"
    } else if bytes.starts_with(b"<svg") || bytes.starts_with(b"<?xml") {
        "SVG image"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "ZIP archive"
    } else {
        "an unknown file type"
    }
}

/// Whether `media_type` names one of the [`SUPPORTED`] image types.
pub fn is_supported(media_type: &str) -> bool {
    SUPPORTED.contains(&media_type.to_ascii_lowercase().as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 1×1 PNG, byte for byte as an encoder writes it.
    pub(crate) fn tiny_png() -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&[0, 0, 0, 13]);
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
        ]);
        png.extend_from_slice(&[0, 0, 0, 13, b'I', b'D', b'A', b'T']);
        png.extend_from_slice(&[
            0x78, 0x9c, 0x63, 0, 1, 0, 0, 5, 0, 1, 0x0d, 0x0a, 0x2d, 0xb4,
        ]);
        png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]);
        png
    }

    fn jpeg(len: usize) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
        j.resize(len - 2, 0x11);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn supported_images_are_recognised_by_their_bytes() {
        assert_eq!(image_type(&tiny_png()), Ok("image/png"));
        assert_eq!(image_type(&jpeg(1000)), Ok("image/jpeg"));
        assert_eq!(
            image_type(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b"),
            Ok("image/gif")
        );
        let mut webp = b"RIFF\x0c\x00\x00\x00WEBPVP8 ".to_vec();
        webp.extend_from_slice(&[0; 4]);
        assert_eq!(image_type(&webp), Ok("image/webp"));
    }

    #[test]
    fn truncated_images_are_corrupt() {
        let png = tiny_png();
        assert_eq!(image_type(&png[..png.len() - 5]), Err(MediaError::Corrupt));
        let j = jpeg(1000);
        assert_eq!(image_type(&j[..500]), Err(MediaError::Corrupt));
        assert_eq!(
            image_type(b"RIFF\xff\x00\x00\x00WEBPVP8 "),
            Err(MediaError::Corrupt)
        );
        assert_eq!(
            image_type(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00"),
            Err(MediaError::Corrupt)
        );
    }

    #[test]
    fn other_types_are_named_and_unsupported() {
        assert_eq!(
            image_type(b"%PDF-1.7 ..."),
            Err(MediaError::Unsupported("PDF document".into()))
        );
        assert_eq!(
            image_type(b"\0\0\0\x18ftypheic...."),
            Err(MediaError::Unsupported("HEIC image".into()))
        );
        assert_eq!(
            image_type(b"hello"),
            Err(MediaError::Unsupported("an unknown file type".into()))
        );
        assert!(is_supported("IMAGE/JPEG"));
        assert!(!is_supported("image/heic"));
    }
}
