//! The shared renderer against a scripted surface: what no platform fake can show cheaply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, Semaphore};

use super::*;
use crate::domain::Completion;

/// A platform with `slots` write slots that records when each request went.
struct Scripted {
    slots: Arc<Semaphore>,
    requests: Mutex<Vec<(Instant, String)>>,
    next_id: AtomicU64,
}

impl Scripted {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(slots)),
            requests: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    fn record(&self, text: &str) {
        self.requests
            .lock()
            .unwrap()
            .push((Instant::now(), text.to_owned()));
    }
}

impl Surface for Scripted {
    type Id = u64;

    fn chat(&self) -> i64 {
        1
    }

    fn compose(&self, draft: &Draft) -> String {
        let mut out = draft.notices.concat();
        out.push_str(&draft.answer);
        if let Some(f) = &draft.failure {
            out.push_str(f);
        }
        out
    }

    fn chunks(&self, markdown: &str) -> Vec<Chunk> {
        Chunk::markdown_split(markdown, 100)
    }

    fn plain(&self, markdown: &str) -> String {
        markdown.to_owned()
    }

    fn empty_note(&self) -> &'static str {
        "(empty)"
    }

    fn typing_repeat(&self) -> Duration {
        Duration::from_secs(4)
    }

    async fn write_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    async fn send(&self, post: Post<'_>) -> Result<u64, WriteError> {
        self.record(post.text);
        Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    async fn edit(&self, _: usize, _: u64, text: &str, _: bool) -> Result<(), WriteError> {
        self.record(text);
        Ok(())
    }

    async fn typing(&self) -> Result<(), WriteError> {
        Ok(())
    }
}

fn settings() -> Settings {
    Settings {
        streaming: true,
        interval: Duration::from_secs(1),
        max_messages: 10,
    }
}

#[tokio::test(start_paused = true)]
async fn the_pacing_slot_is_taken_when_the_request_goes_not_while_it_queues() {
    let surface = Scripted::new(1);
    let (tx, mut rx) = mpsc::channel(16);
    let stream: ReplyStream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    let reply = Reply::new(
        surface.clone(),
        Arc::new(Stage::default()),
        Ticket::first(),
        settings(),
        false,
    );
    let rendering = tokio::spawn(reply.run(stream));
    // Under load: from 0.1 s to 1.7 s every write slot is busy with other chats' requests.
    let slots = surface.slots.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let busy = slots.acquire_owned().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        drop(busy);
    });
    for i in 0..12 {
        tx.send(ReplyEvent::Delta(format!("word{i} ")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let done = Completion::default();
    tx.send(ReplyEvent::Finished(done)).await.unwrap();
    assert_eq!(rendering.await.unwrap(), Delivery::Delivered);
    let requests = surface.requests.lock().unwrap().clone();
    assert!(requests.len() >= 3, "{requests:?}");
    for pair in requests.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_secs(1),
            "two requests {:?} apart: {requests:?}",
            pair[1].0 - pair[0].0
        );
    }
    assert!(requests.last().unwrap().1.ends_with("word11 "));
}
