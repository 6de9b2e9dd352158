//! `[media]`: limits for the images and files people send (download caps and timeouts, how long an
//! image stays in a conversation's context).

use serde::{Deserialize, Serialize};

use super::{check_range, ConfigError};

/// The largest image cap accepted: Telegram's Bot API serves files up to 20 MB through `getFile`, and
/// a base64 image over that would dwarf any model's request limit.
pub const MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;
/// The largest text-file cap accepted: 1 MiB of text is far beyond any model window we route to.
pub const MAX_TEXT_FILE_BYTES: u64 = 1024 * 1024;

/// Media settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The largest image accepted, in bytes. 10 MiB takes any phone photo (Telegram's largest photo
    /// size is about 1280 px, well under 1 MiB) while bounding what 100 concurrent photo turns hold.
    pub max_image_bytes: u64,
    /// The largest text file (txt, md, code, csv, json) read into the prompt, in bytes. 64 KiB is about
    /// 16,000 tokens: a long source file, still inside the windows of the models we route to.
    pub max_text_file_bytes: u64,
    /// Seconds to wait for a download's connection: a host that does not answer in 10 s is down.
    pub connect_timeout_secs: u64,
    /// Seconds a download may go without receiving a byte before it counts as stalled.
    pub read_timeout_secs: u64,
    /// Seconds a whole download may take: 10 MiB at a slow 1 Mbit/s takes about 80 s; 60 s keeps a
    /// turn from waiting longer than people wait for an answer.
    pub total_timeout_secs: u64,
    /// An image is sent again with the follow-up questions of this many later turns (people ask "and
    /// what about the left corner?"); after that it is only named as `[image: …]` in the context.
    pub resend_turns: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_image_bytes: 10 * 1024 * 1024,
            max_text_file_bytes: 64 * 1024,
            connect_timeout_secs: 10,
            read_timeout_secs: 15,
            total_timeout_secs: 60,
            resend_turns: 3,
        }
    }
}

impl MediaConfig {
    /// Range checks of `[media]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let d = Self::default();
        check_range(
            "media.max_image_bytes",
            self.max_image_bytes,
            1024,
            MAX_IMAGE_BYTES,
            "the largest image accepted, in bytes",
            d.max_image_bytes,
        )?;
        check_range(
            "media.max_text_file_bytes",
            self.max_text_file_bytes,
            1,
            MAX_TEXT_FILE_BYTES,
            "the largest text file read into a prompt, in bytes",
            d.max_text_file_bytes,
        )?;
        for (key, value, default) in [
            (
                "media.connect_timeout_secs",
                self.connect_timeout_secs,
                d.connect_timeout_secs,
            ),
            (
                "media.read_timeout_secs",
                self.read_timeout_secs,
                d.read_timeout_secs,
            ),
            (
                "media.total_timeout_secs",
                self.total_timeout_secs,
                d.total_timeout_secs,
            ),
        ] {
            check_range(
                key,
                value,
                1,
                600,
                "a download timeout, in seconds",
                default,
            )?;
        }
        check_range(
            "media.resend_turns",
            self.resend_turns,
            0,
            50,
            "how many later turns an image is sent again with",
            d.resend_turns,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_an_out_of_range_limit_names_its_key() {
        assert!(MediaConfig::default().validate().is_ok());
        let too_big = MediaConfig {
            max_image_bytes: MAX_IMAGE_BYTES + 1,
            ..MediaConfig::default()
        };
        assert_eq!(too_big.validate().unwrap_err().key, "media.max_image_bytes");
        let no_wait = MediaConfig {
            read_timeout_secs: 0,
            ..MediaConfig::default()
        };
        assert_eq!(
            no_wait.validate().unwrap_err().key,
            "media.read_timeout_secs"
        );
    }
}
