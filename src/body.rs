//! Reading a whole HTTP response body under a byte cap, for every client that buffers one (provider
//! error and JSON bodies, Telegram's `getUpdates` answer, Discord REST answers): a peer that sends more
//! than the cap fails that one call instead of filling the process's memory.

/// Why a capped body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body (or its announced `Content-Length`) is larger than the cap.
    #[error("the response body is larger than {limit} bytes")]
    TooLarge {
        /// The cap that was passed.
        limit: usize,
    },
    /// The connection failed while reading (the error is already stripped of its URL).
    #[error("reading the response body failed: {0}")]
    Read(reqwest::Error),
}

/// Reads `response`'s body, failing as soon as it passes `limit` bytes. No timeout of its own: callers
/// bound the wait (a deadline, or the client's total timeout).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|announced| announced > limit as u64)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
