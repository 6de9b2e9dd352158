//! Media from local paths, for the terminal's `/image PATH` (the operator testing by hand).

use futures_util::future::BoxFuture;
use tokio::io::AsyncReadExt;

use super::{Limits, MediaError, MediaSource};

/// Reads attachments from the local file system; the handle is a path.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFiles;

impl MediaSource for LocalFiles {
    fn fetch<'a>(
        &'a self,
        source: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, Result<Vec<u8>, MediaError>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(source)
                .await
                .map_err(|e| MediaError::Failed(e.kind().to_string()))?;
            let mut bytes = Vec::new();
            // One byte over the cap tells "too large" from "exactly the cap".
            file.take(limits.max_bytes + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| MediaError::Failed(e.kind().to_string()))?;
            if bytes.len() as u64 > limits.max_bytes {
                return Err(MediaError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            Ok(bytes)
        })
    }
}
