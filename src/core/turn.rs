//! One LLM turn: load context, store the user's turn, ask the router, forward its events, and store the
//! answer — complete when it finished, marked incomplete when it was cut short (never as complete).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::delivery::Delivery;
use super::{usage, Core, RESTARTING_MESSAGE};
use crate::config::Config;
use crate::domain::{
    ChatKind, ChatMessage, ConversationKey, FailureKind, Inbound, ReplyEvent, Role, UserFacingError,
};
use crate::router::CompletionRequest;
use crate::store::{Turn, TurnStatus};

/// The message shown when the store cannot be read or written for a turn.
const STORE_ERROR_MESSAGE: &str =
    "Sorry — I couldn't reach my memory just now. Please try again in a moment.";

/// Everything one turn needs.
pub(super) struct TurnSpec {
    pub config: Arc<Config>,
    pub inbound: Inbound,
    pub key: ConversationKey,
    pub prompt: String,
    pub cancel: CancellationToken,
    /// The adapter's delivery report, if it gives one: the answer is then stored after it.
    pub verdict: Option<oneshot::Receiver<Delivery>>,
}

/// Runs one turn to its end, sending every event to `tx`. Never panics on its own; errors become
/// friendly `Failed` events.
pub(super) async fn run(core: &Core, spec: TurnSpec, tx: &mpsc::Sender<ReplyEvent>) {
    let TurnSpec {
        config,
        inbound,
        key,
        prompt,
        cancel,
        verdict,
    } = spec;
    let shared_chat = inbound.chat_kind == ChatKind::Group;
    let author = shared_chat.then(|| inbound.sender.display_name.clone());

    let prepared = (|| {
        let meta = core.store.conversation(&key)?.unwrap_or_default();
        let history = core
            .store
            .recent_turns(&key, meta.epoch, config.store.load_turns)?;
        let user_turn = Turn {
            role: Role::User,
            author: author.clone(),
            text: prompt.clone(),
            at_ms: core.now_ms(),
            status: TurnStatus::Complete,
            source: None,
        };
        // The user's turn is written before the model is called, so a crash never loses what was asked.
        core.store.append_turn(&key, meta.epoch, &user_turn)?;
        let settings = super::commands::chat_settings(core.store.as_ref(), &inbound.chat)?;
        Ok::<_, crate::store::StoreError>((meta.epoch, history, settings))
    })();
    let (epoch, history, settings) = match prepared {
        Ok(p) => p,
        Err(e) => {
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

    let paid_allowed = usage::paid_allowed(core, &config, &inbound.sender.user);
    let request = CompletionRequest {
        conversation: key.clone(),
        user: inbound.sender.user.clone(),
        chat: inbound.chat.clone(),
        system_prompt: settings
            .system_prompt
            .unwrap_or_else(|| config.core.system_prompt.clone()),
        history: history.iter().map(to_message).collect(),
        prompt: ChatMessage::new(Role::User, with_author(author.as_deref(), &prompt)),
        model: settings.model,
        paid_allowed,
        max_tokens: Some(if settings.long {
            config.core.long_max_tokens
        } else {
            config.core.max_tokens
        }),
    };
    let mut events = core.router.complete(request);
    let deadline = tokio::time::sleep(Duration::from_secs(config.core.turn_deadline_secs));
    tokio::pin!(deadline);
    let mut text = String::new();
    let mut source = None;
    let ending = loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => break stop_reason(core),
            () = &mut deadline => break UserFacingError::new(FailureKind::Interrupted, "That answer took too long and was stopped."),
            event = events.next() => event,
        };
        let Some(event) = event else {
            // The router always ends with Finished or Failed; a bare end is a bug we still answer for.
            break UserFacingError::new(
                FailureKind::Interrupted,
                "The answer ended unexpectedly; it may be incomplete.",
            );
        };
        let event = scrubbed(event);
        match &event {
            ReplyEvent::Started(s) => source = Some(s.clone()),
            ReplyEvent::Delta(d) => text.push_str(d),
            ReplyEvent::Notice(_) => {}
            ReplyEvent::Finished(completion) => {
                let usage = completion.usage;
                let answered_by = completion.source.clone().or(source);
                let (status, unsent) = finished_status(tx, event, verdict).await;
                store_answer(core, &key, epoch, &text, status, answered_by.clone());
                usage::record(core, &inbound, answered_by.as_ref(), usage);
                if let Some(event) = unsent {
                    let _ = tx.send(event).await;
                }
                // Durable after every completed turn (sled would otherwise fsync within ~500 ms).
                if let Err(e) = core.store.flush().await {
                    tracing::error!(error = %e, "flushing the store after a turn failed");
                }
                return;
            }
            ReplyEvent::Failed(failure) => {
                let failure = failure.clone();
                if !text.is_empty() {
                    store_answer(
                        core,
                        &key,
                        epoch,
                        &text,
                        TurnStatus::Incomplete,
                        source.clone(),
                    );
                }
                if source.is_some() {
                    // A request was made: it counts toward the user's usage even though it failed.
                    usage::record(core, &inbound, source.as_ref(), Default::default());
                }
                let _ = tx.send(ReplyEvent::Failed(failure)).await;
                return;
            }
        }
        if tx.send(event).await.is_err() {
            // The adapter went away; keep nothing half-shown as complete.
            break UserFacingError::new(FailureKind::Interrupted, "The reply was abandoned.");
        }
    };
    drop(events);
    if !text.is_empty() {
        store_answer(core, &key, epoch, &text, TurnStatus::Incomplete, source);
    }
    let _ = tx.send(ReplyEvent::Failed(ending)).await;
    if let Err(e) = core.store.flush().await {
        tracing::error!(error = %e, "flushing the store after a cut turn failed");
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

fn store_answer(
    core: &Core,
    key: &ConversationKey,
    epoch: u32,
    text: &str,
    status: TurnStatus,
    source: Option<crate::domain::AnswerSource>,
) {
    let turn = Turn {
        role: Role::Assistant,
        author: None,
        text: text.to_owned(),
        at_ms: core.now_ms(),
        status,
        source,
    };
    if let Err(e) = core.store.append_turn(key, epoch, &turn) {
        tracing::error!(error = %e, conversation = %key, "could not store an answer");
    }
}

/// `event` without any loaded secret in the text it shows the user: a provider's error or a proxy may
/// echo a key, and what the user sees is also what is stored.
fn scrubbed(event: ReplyEvent) -> ReplyEvent {
    let clean = |text: String| match crate::secrets::scrub(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    };
    match event {
        ReplyEvent::Notice(text) => ReplyEvent::Notice(clean(text)),
        ReplyEvent::Delta(text) => ReplyEvent::Delta(clean(text)),
        ReplyEvent::Failed(failure) => ReplyEvent::Failed(UserFacingError {
            message: clean(failure.message),
            ..failure
        }),
        other => other,
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
