//! Downloads under a byte cap counted while streaming (a lying or missing `Content-Length` does not
//! help a sender), with connect, idle-read and total timeouts; and [`UrlSource`], the media source whose
//! handles are plain URLs (Discord attachments).

use futures_util::future::BoxFuture;
use tokio::time::{timeout, Instant};

use super::{Limits, MediaError, MediaSource};

/// A reusable HTTP client for attachment downloads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Downloader {
    client: reqwest::Client,
}

impl Downloader {
    /// A downloader whose connections give up after `connect` (a host that does not answer is down;
    /// reqwest sets this per client, so it comes from the configuration at start-up).
    pub fn new(connect: std::time::Duration) -> Result<Self, MediaError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            // Attachment hosts answer directly; a redirect chain is followed only a little way.
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| MediaError::Failed(e.without_url().to_string()))?;
        Ok(Self { client })
    }

    /// GETs `url` and returns its body, failing with [`MediaError::TooLarge`] as soon as more than
    /// `limits.max_bytes` arrive (or are announced), [`MediaError::Stalled`] when no byte comes for
    /// `limits.read` or the whole takes longer than `limits.total`. Errors never carry the URL (a
    /// Telegram file URL holds the bot token).
    pub async fn get(&self, url: &str, limits: Limits) -> Result<Vec<u8>, MediaError> {
        let deadline = Instant::now() + limits.total;
        let response = within(deadline, limits.read, self.client.get(url).send())
            .await?
            .map_err(|e| MediaError::Failed(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(MediaError::Failed(format!("HTTP {}", status.as_u16())));
        }
        read_body(response, limits, deadline).await
    }
}

/// Reads `response` under the cap and the timeouts.
async fn read_body(
    mut response: reqwest::Response,
    limits: Limits,
    deadline: Instant,
) -> Result<Vec<u8>, MediaError> {
    let limit = limits.max_bytes;
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(MediaError::TooLarge { limit });
    }
    let capacity = response.content_length().unwrap_or(0).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    loop {
        let chunk = within(deadline, limits.read, response.chunk())
            .await?
            .map_err(|e| MediaError::Failed(e.without_url().to_string()))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(MediaError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
}

/// `future`, unless it takes longer than `idle` or runs past `deadline`: then [`MediaError::Stalled`].
async fn within<F: std::future::Future>(
    deadline: Instant,
    idle: std::time::Duration,
    future: F,
) -> Result<F::Output, MediaError> {
    let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
    timeout(wait, future).await.map_err(|_| MediaError::Stalled)
}

/// Media whose handles are URLs the platform gave us (Discord attachments).
#[derive(Clone, Debug)]
pub struct UrlSource {
    downloader: Downloader,
}

impl UrlSource {
    /// A source downloading with `downloader`.
    pub fn new(downloader: Downloader) -> Self {
        Self { downloader }
    }
}

impl MediaSource for UrlSource {
    fn fetch<'a>(
        &'a self,
        source: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, Result<Vec<u8>, MediaError>> {
        Box::pin(async move {
            if !(source.starts_with("https://") || source.starts_with("http://")) {
                return Err(MediaError::Failed("not an http(s) URL".into()));
            }
            self.downloader.get(source, limits).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;

    use super::*;

    fn limits(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            connect: Duration::from_secs(2),
            read: Duration::from_millis(300),
            total: Duration::from_secs(5),
        }
    }

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// A body that streams `chunks` of 1 KiB with no Content-Length, then `stall`s forever if asked.
    fn chunked(chunks: usize, stall: bool) -> Body {
        let stream = futures_util::stream::unfold(0, move |i| async move {
            if i == chunks {
                if stall {
                    std::future::pending::<()>().await;
                }
                return None;
            }
            Some((Ok::<_, std::io::Error>(vec![7u8; 1024]), i + 1))
        });
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn the_cap_holds_while_streaming_whatever_the_headers_say() {
        let app = Router::new()
            .route("/ok", get(|| async { chunked(4, false) }))
            .route("/big", get(|| async { chunked(64, false) }))
            .route(
                "/liar",
                get(|| async {
                    // Announces 10 bytes and sends 64 KiB: the client must count, not trust.
                    axum::response::Response::builder()
                        .header("content-length", "10")
                        .body(chunked(64, false))
                        .unwrap()
                }),
            )
            .route("/stall", get(|| async { chunked(2, true) }))
            .route("/gone", get(|| async { axum::http::StatusCode::NOT_FOUND }));
        let base = serve(app).await;
        let d = Downloader::new(Duration::from_secs(2)).unwrap();
        assert_eq!(
            d.get(&format!("{base}/ok"), limits(8192))
                .await
                .unwrap()
                .len(),
            4096
        );
        assert_eq!(
            d.get(&format!("{base}/big"), limits(8192)).await,
            Err(MediaError::TooLarge { limit: 8192 })
        );
        // HTTP framing holds a short announcement to its word; either way no more than the cap arrives.
        let liar = d.get(&format!("{base}/liar"), limits(8192)).await;
        assert!(liar.as_ref().map_or(true, |b| b.len() <= 10), "{liar:?}");
        assert_eq!(
            d.get(&format!("{base}/stall"), limits(8192)).await,
            Err(MediaError::Stalled)
        );
        assert_eq!(
            d.get(&format!("{base}/gone"), limits(8192)).await,
            Err(MediaError::Failed("HTTP 404".into()))
        );
        let source = UrlSource::new(d);
        assert!(source
            .fetch("file:///etc/passwd", limits(10))
            .await
            .is_err());
    }
}
