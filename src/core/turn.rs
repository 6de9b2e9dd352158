//! One LLM turn: load context, store the user's turn, ask the router, forward its events, and store the
//! answer — complete when it finished, marked incomplete when it was cut short (never as complete).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::delivery::Delivery;
use super::journal::{JournalTicket, ReplyState};
use super::{media, usage, Core, RESTARTING_MESSAGE};
use crate::config::Config;
use crate::domain::{
    ChatKind, ChatMessage, Completion, ConversationKey, FailureKind, Inbound, ReplyEvent,
    ReplyStream, Role, Usage, UserFacingError,
};
use crate::generation::ImageData;
use crate::media::ImageRef;
use crate::router::CompletionRequest;
use crate::secrets::ReplyScrubber;
use crate::store::{Turn, TurnStatus};

/// The message shown when the store cannot be read or written for a turn.
const STORE_ERROR_MESSAGE: &str =
    "Sorry — I couldn't reach my memory just now. Please try again in a moment.";

/// What was asked, and how the asker follows the answer.
pub(super) struct Asked {
    pub key: ConversationKey,
    pub prompt: String,
    /// The adapter's delivery report, if it gives one: the answer is then stored after it. Dropped
    /// before a reply's last event when no answer waits for it, so the adapter's [`super::Receipt`]
    /// settles the journal record instead.
    pub verdict: Option<oneshot::Receiver<Delivery>>,
    /// The message's reply-journal record, if the adapter keeps one.
    pub journal: Option<JournalTicket>,
}

/// Everything one turn needs.
pub(super) struct TurnSpec {
    pub config: Arc<Config>,
    pub inbound: Inbound,
    pub asked: Asked,
    pub cancel: CancellationToken,
}

/// Runs one turn to its end, sending every event to `tx`. Never panics on its own; errors become
/// friendly `Failed` events.
pub(super) async fn run(core: &Core, spec: TurnSpec, tx: &mpsc::Sender<ReplyEvent>) {
    let TurnSpec {
        config,
        inbound,
        asked:
            Asked {
                key,
                prompt,
                verdict,
                journal,
            },
        cancel,
    } = spec;
    let Some(gathered) = attachments(core, &config, &inbound, &cancel, tx).await else {
        return;
    };
    let prompt = gathered.prompt(&prompt);
    let shared_chat = inbound.chat_kind == ChatKind::Group;
    let author = shared_chat.then(|| inbound.sender.display_name.clone());
    let turn = TurnContext {
        core,
        config: &config,
        inbound: &inbound,
        key: &key,
        author: author.as_deref(),
        prompt: &prompt,
        journal: journal.as_ref(),
    };
    let prepared = match turn.prepare() {
        Ok(p) => p,
        Err(e) => {
            drop(verdict);
            tracing::error!(error = %e, conversation = %key, "store failure before a turn");
            let _ = tx
                .send(ReplyEvent::Failed(UserFacingError::new(
                    FailureKind::Internal,
                    STORE_ERROR_MESSAGE,
                )))
                .await;
            return;
        }
    };
    let epoch = prepared.epoch;
    // Held to the turn's end: the images stay in memory until the answer is done.
    let (images, new_images, _image_permit) = turn.images(&prepared, gathered).await;
    let with_images = !images.is_empty();
    let turn_no = prepared.turn_no;
    let mut request = turn.request(prepared);
    let paid_allowed = request.paid_allowed;
    request.prompt.images = images;
    let mut events = core.router.complete(request);
    let mut answer = Answer::default();
    match forward(&turn, &cancel, &mut events, tx, &mut answer).await {
        Ending::Finished(completion) => {
            turn.settle_finished(epoch, answer, completion, tx, verdict)
                .await;
            if with_images {
                usage::record_image_turn(core, &inbound);
                // Only an answered image is worth sending again: one no model could look at would
                // make every follow-up fail the same way.
                let platform = inbound.chat.platform;
                media::remember(core, &key, platform, epoch, turn_no, &new_images);
            }
        }
        Ending::Failed(failure) if with_images => {
            let paid_on = paid_allowed && config.router.paid_enabled && !config.router.free_only;
            let failure = media::vision_failure(failure, paid_on);
            turn.settle_failed(epoch, answer, failure, tx).await;
        }
        Ending::Failed(failure) => {
            drop(verdict);
            turn.settle_failed(epoch, answer, failure, tx).await;
        }
        Ending::Cut(reason) => {
            drop((events, verdict));
            turn.settle_cut(epoch, answer, reason, tx).await;
        }
    }
}

/// Fetches the turn's attachments before anything is stored; `None` when the user was told why they
/// cannot be used (or the turn was stopped meanwhile) and the turn ends there.
async fn attachments(
    core: &Core,
    config: &Config,
    inbound: &Inbound,
    cancel: &CancellationToken,
    tx: &mpsc::Sender<ReplyEvent>,
) -> Option<media::Gathered> {
    let failure = tokio::select! {
        biased;
        () = cancel.cancelled() => stop_reason(core),
        gathered = media::gather(core, config, inbound) => match gathered {
            Ok(gathered) => return Some(gathered),
            Err(refusal) => refusal,
        },
    };
    let _ = tx.send(ReplyEvent::Failed(failure)).await;
    None
}

/// The parts of one turn its steps share.
struct TurnContext<'a> {
    core: &'a Core,
    config: &'a Config,
    inbound: &'a Inbound,
    key: &'a ConversationKey,
    /// The sender's name in shared chats, where user turns carry their author.
    author: Option<&'a str>,
    prompt: &'a str,
    /// The message's reply-journal record.
    journal: Option<&'a JournalTicket>,
}

/// What a turn starts from: read, with the user's turn written, before the model is asked.
struct Prepared {
    epoch: u32,
    /// The conversation's turn count before the user's turn was stored (its position).
    turn_no: u64,
    history: Vec<Turn>,
    settings: super::commands::ChatSettings,
}

/// What has been forwarded of the answer so far.
#[derive(Default)]
struct Answer {
    text: String,
    source: Option<crate::domain::AnswerSource>,
}

/// How the router's events ended for this turn.
enum Ending {
    /// The router finished the answer; its `Finished` event is not forwarded yet.
    Finished(Completion),
    /// The router failed; its `Failed` event is not forwarded yet.
    Failed(UserFacingError),
    /// The turn was cut short (stopped, over its deadline, abandoned, or a bare end of stream).
    Cut(UserFacingError),
}

/// Forwards the router's events to `tx`, collecting the answer, until the router ends or the turn is
/// cut short. The events are scrubbed of secrets, even one split across deltas: a provider's error or a
/// proxy may echo a key, and what the user sees is also what is stored.
async fn forward(
    turn: &TurnContext<'_>,
    cancel: &CancellationToken,
    events: &mut ReplyStream,
    tx: &mpsc::Sender<ReplyEvent>,
    answer: &mut Answer,
) -> Ending {
    let deadline = tokio::time::sleep(Duration::from_secs(turn.config.core.turn_deadline_secs));
    tokio::pin!(deadline);
    let mut scrubber = ReplyScrubber::default();
    loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ending::Cut(stop_reason(turn.core)),
            () = &mut deadline => return Ending::Cut(UserFacingError::new(FailureKind::Interrupted, "That answer took too long and was stopped.")),
            event = events.next() => event,
        };
        let Some(event) = event else {
            // The router always ends with Finished or Failed; a bare end is a bug we still answer for.
            return Ending::Cut(UserFacingError::new(
                FailureKind::Interrupted,
                "The answer ended unexpectedly; it may be incomplete.",
            ));
        };
        for event in scrubber.clean(event) {
            match event {
                ReplyEvent::Finished(completion) => return Ending::Finished(completion),
                ReplyEvent::Failed(failure) => return Ending::Failed(failure),
                event => {
                    match &event {
                        ReplyEvent::Started(s) => answer.source = Some(s.clone()),
                        ReplyEvent::Delta(d) => answer.text.push_str(d),
                        _ => {}
                    }
                    if tx.send(event).await.is_err() {
                        // The adapter went away; keep nothing half-shown as complete.
                        return Ending::Cut(UserFacingError::new(
                            FailureKind::Interrupted,
                            "The reply was abandoned.",
                        ));
                    }
                }
            }
        }
    }
}

impl TurnContext<'_> {
    /// Reads the conversation and the chat's settings and stores the user's turn — unless the journal
    /// says an earlier run already stored it (a question answered again at recovery): then that stored
    /// turn is the prompt, not history.
    fn prepare(&self) -> Result<Prepared, crate::store::StoreError> {
        let core = self.core;
        let meta = core.store.conversation(self.key)?.unwrap_or_default();
        let mut history =
            core.store
                .recent_turns(self.key, meta.epoch, self.config.store.load_turns)?;
        let settings = super::commands::chat_settings(core.store.as_ref(), &self.inbound.chat)?;
        let stored = self
            .journal
            .and_then(JournalTicket::entry)
            .is_some_and(|e| e.question_stored);
        if stored {
            if history
                .last()
                .is_some_and(|t| t.role == Role::User && t.text == self.prompt)
            {
                history.pop();
            }
            // A re-answer after a restart: the user's turn is already the last one stored.
            return Ok(Prepared {
                epoch: meta.epoch,
                turn_no: meta.turns.saturating_sub(1),
                history,
                settings,
            });
        }
        let user_turn = Turn {
            role: Role::User,
            author: self.author.map(str::to_owned),
            text: self.prompt.to_owned(),
            at_ms: core.now_ms(),
            status: TurnStatus::Complete,
            source: None,
        };
        // The user's turn is written before the model is called, so a crash never loses what was asked;
        // the journal learns it after the turn (a crash between the two can only repeat the question in
        // history, never lose it).
        core.store.append_turn(self.key, meta.epoch, &user_turn)?;
        if let Some(journal) = self.journal {
            journal.question_stored();
        }
        Ok(Prepared {
            epoch: meta.epoch,
            turn_no: meta.turns,
            history,
            settings,
        })
    }

    /// The images the model gets with this turn (earlier ones still within `media.resend_turns`, then
    /// the new ones), the new ones' references (remembered once the turn is answered), and the turn's
    /// image permit.
    async fn images(
        &self,
        prepared: &Prepared,
        gathered: media::Gathered,
    ) -> (Vec<ImageData>, Vec<ImageRef>, Option<OwnedSemaphorePermit>) {
        let mut permit = gathered.permit;
        let at = (prepared.epoch, prepared.turn_no);
        let mut images = media::resend(self.core, self.config, self.key, at, &mut permit).await;
        let mut refs = Vec::with_capacity(gathered.images.len());
        for (reference, data) in gathered.images {
            images.push(data);
            refs.push(reference);
        }
        (images, refs, permit)
    }

    /// The router request for this turn.
    fn request(&self, prepared: Prepared) -> CompletionRequest {
        let Prepared {
            history, settings, ..
        } = prepared;
        let config = self.config;
        let sender = &self.inbound.sender;
        CompletionRequest {
            conversation: self.key.clone(),
            user: sender.user.clone(),
            chat: self.inbound.chat.clone(),
            system_prompt: settings
                .system_prompt
                .unwrap_or_else(|| config.core.system_prompt.clone()),
            history: history.iter().map(to_message).collect(),
            prompt: ChatMessage::new(Role::User, with_author(self.author, self.prompt)),
            model: settings.model,
            selector: crate::router::ModelSelector::Policy,
            params: crate::generation::GenerationParams::default(),
            sticky: true,
            paid_allowed: usage::paid_allowed(self.core, config, &sender.user),
            max_tokens: Some(if settings.long {
                config.core.long_max_tokens
            } else {
                config.core.max_tokens
            }),
        }
    }

    /// Stores a finished answer (complete once delivered), counts its usage and sends `Finished`.
    async fn settle_finished(
        &self,
        epoch: u32,
        answer: Answer,
        completion: Completion,
        tx: &mpsc::Sender<ReplyEvent>,
        verdict: Option<oneshot::Receiver<Delivery>>,
    ) {
        let usage = completion.usage;
        let answered_by = completion.source.clone().or(answer.source);
        let event = ReplyEvent::Finished(completion);
        if let Some(journal) = self.journal {
            journal.advance(ReplyState::Finished);
        }
        let (status, unsent) = finished_status(tx, event, verdict).await;
        self.store_answer(epoch, &answer.text, status, answered_by.clone());
        // After the answer: settled durably means the answer is stored too (sled keeps write order).
        if let Some(journal) = self.journal {
            journal.advance(ReplyState::Delivered);
        }
        usage::record(self.core, self.inbound, answered_by.as_ref(), usage);
        if let Some(event) = unsent {
            let _ = tx.send(event).await;
        }
        // Durable after every completed turn (sled would otherwise fsync within ~500 ms).
        if let Err(e) = self.core.store.flush().await {
            tracing::error!(error = %e, "flushing the store after a turn failed");
        }
    }

    /// Keeps what was said of a failed answer as incomplete, counts the request, and sends `Failed`.
    async fn settle_failed(
        &self,
        epoch: u32,
        answer: Answer,
        failure: UserFacingError,
        tx: &mpsc::Sender<ReplyEvent>,
    ) {
        if !answer.text.is_empty() {
            self.store_answer(
                epoch,
                &answer.text,
                TurnStatus::Incomplete,
                answer.source.clone(),
            );
        }
        if answer.source.is_some() {
            // A request was made: it counts toward the user's usage even though it failed.
            usage::record(
                self.core,
                self.inbound,
                answer.source.as_ref(),
                Usage::default(),
            );
        }
        let _ = tx.send(ReplyEvent::Failed(failure)).await;
    }

    /// Keeps what was said of a cut answer as incomplete and tells the user why it stopped.
    async fn settle_cut(
        &self,
        epoch: u32,
        answer: Answer,
        reason: UserFacingError,
        tx: &mpsc::Sender<ReplyEvent>,
    ) {
        if !answer.text.is_empty() {
            self.store_answer(epoch, &answer.text, TurnStatus::Incomplete, answer.source);
        }
        let _ = tx.send(ReplyEvent::Failed(reason)).await;
        if let Err(e) = self.core.store.flush().await {
            tracing::error!(error = %e, "flushing the store after a cut turn failed");
        }
    }

    fn store_answer(
        &self,
        epoch: u32,
        text: &str,
        status: TurnStatus,
        source: Option<crate::domain::AnswerSource>,
    ) {
        let turn = Turn {
            role: Role::Assistant,
            author: None,
            text: text.to_owned(),
            at_ms: self.core.now_ms(),
            status,
            source,
        };
        if let Err(e) = self.core.store.append_turn(self.key, epoch, &turn) {
            tracing::error!(error = %e, conversation = %self.key, "could not store an answer");
        }
    }
}

/// How a finished answer is stored. With the adapter's delivery report (`verdict`) the `Finished`
/// event goes out first and the answer is complete only once the adapter says the user has it;
/// without one it is complete at once and the event is returned, to be sent after storing.
async fn finished_status(
    tx: &mpsc::Sender<ReplyEvent>,
    event: ReplyEvent,
    verdict: Option<oneshot::Receiver<Delivery>>,
) -> (TurnStatus, Option<ReplyEvent>) {
    let Some(verdict) = verdict else {
        return (TurnStatus::Complete, Some(event));
    };
    let _ = tx.send(event).await;
    let status = match super::delivery::verdict(verdict).await {
        Delivery::Delivered => TurnStatus::Complete,
        Delivery::Undelivered => TurnStatus::Incomplete,
    };
    (status, None)
}

/// What a stopped turn tells its user: the shutdown cut's "restarting" note, else a `/cancel` or
/// `/reset` stopped it.
pub(super) fn stop_reason(core: &Core) -> UserFacingError {
    if core.cut.is_cancelled() {
        UserFacingError::new(FailureKind::ShuttingDown, RESTARTING_MESSAGE)
    } else {
        UserFacingError::new(FailureKind::Cancelled, "Stopped.")
    }
}

/// A stored turn as context: in shared chats, user turns carry their author's name.
fn to_message(turn: &Turn) -> ChatMessage {
    match turn.role {
        Role::User => ChatMessage::new(Role::User, with_author(turn.author.as_deref(), &turn.text)),
        role => ChatMessage::new(role, turn.text.clone()),
    }
}

fn with_author(author: Option<&str>, text: &str) -> String {
    match author {
        Some(name) => format!("{name}: {text}"),
        None => text.to_owned(),
    }
}
