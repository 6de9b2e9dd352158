//! What the local API asks of the router beyond the bots' turns: estimated usage, reasoning that is
//! shown (API) or not (bots), per-request stickiness, selectors and capability routing.

use super::*;
use crate::generation::{ImageData, Reasoning};
use crate::router::ModelSelector;

fn api(conv: &str, text: &str) -> CompletionRequest {
    let mut req = request(conv, text);
    req.chat = ChatRef::new(Platform::Api, "client");
    req.user = UserRef::new(Platform::Api, "client");
    req.sticky = false;
    req
}

fn finished_with(events: &[ReplyEvent]) -> &crate::domain::Completion {
    match events.last() {
        Some(ReplyEvent::Finished(c)) => c,
        other => panic!("expected Finished, got {other:?} in {events:?}"),
    }
}

fn failed_with(events: &[ReplyEvent]) -> &crate::domain::UserFacingError {
    match events.last() {
        Some(ReplyEvent::Failed(f)) => f,
        other => panic!("expected Failed, got {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn usage_is_estimated_when_the_provider_reports_none() {
    let rig = rig_with(config(0), &["k1"], &[]);
    let done = ProviderEvent::Done {
        usage: Usage::default(),
        finish_reason: Some("stop".into()),
    };
    rig.free.on_model(
        "a:free",
        Act::Events(vec![
            Ok(ProviderEvent::Delta("twelve chars".into())),
            Ok(done),
        ]),
    );
    let events = ask(&rig.router, api("c", "hello")).await;
    let c = finished_with(&events);
    assert!(c.usage_estimated);
    assert!(c.usage.prompt_tokens > 0);
    assert_eq!(c.usage.completion_tokens, 4, "12 characters at 3.5 a token");
    // A provider's own count is kept as it is.
    let events = ask(&rig.router, api("c", "hello")).await;
    let c = finished_with(&events);
    assert!(!c.usage_estimated);
    assert_eq!(c.usage.completion_tokens, 2);
}

#[tokio::test]
async fn reasoning_is_no_first_token_for_bots_but_is_shown_to_the_api() {
    let rig = rig_with(config(0), &["k1"], &[]);
    let thought_then_stall = || {
        Act::Events(vec![
            Ok(ProviderEvent::Reasoning("hmm".into())),
            Err(ProviderError::Stalled),
        ])
    };
    rig.free.on_model("a:free", thought_then_stall());
    let bot = ask(&rig.router, request("bot", "hi")).await;
    assert!(!bot.iter().any(|e| matches!(e, ReplyEvent::Reasoning(_))));
    assert_eq!(
        started(&bot).1,
        "openrouter/free@real",
        "fell back: {bot:?}"
    );
    assert!(finished(&bot));

    rig.free.on_model("a:free", thought_then_stall());
    let events = ask(&rig.router, api("api", "hi")).await;
    assert!(events.contains(&ReplyEvent::Reasoning("hmm".into())));
    assert_eq!(failed_with(&events).kind, FailureKind::Interrupted);
}

#[tokio::test]
async fn stateless_requests_neither_read_nor_write_stickiness() {
    let rig = rig_with(config(0), &["k1"], &[]);
    // a:free fails once: openrouter/free answers and would become sticky.
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 500 }));
    let mut first = api("s", "hi");
    first.sticky = false;
    assert_eq!(
        started(&ask(&rig.router, first).await).1,
        "openrouter/free@real"
    );
    assert_eq!(
        started(&ask(&rig.router, api("s", "hi")).await).1,
        "a:free@real",
        "nothing remembered"
    );
    // The same with stickiness on: the conversation keeps the model that answered.
    rig.free
        .on_model("a:free", Act::Fail(ProviderError::Upstream { status: 500 }));
    assert_eq!(
        started(&ask(&rig.router, request("t", "hi")).await).1,
        "openrouter/free@real"
    );
    let again = ask(&rig.router, request("t", "hi")).await;
    assert_eq!(started(&again).1, "openrouter/free@real");
}

#[tokio::test]
async fn selectors_restrict_the_tiers_and_exact_models() {
    let rig = rig_with(config(0), &["k1"], &["p1"]);
    let mut paid = api("c", "hi");
    paid.selector = ModelSelector::PaidOnly;
    assert_eq!(started(&ask(&rig.router, paid).await).0, "paid");
    let mut exact = api("c", "hi");
    exact.selector = ModelSelector::Exact("kimi-k2.5".into());
    assert_eq!(started(&ask(&rig.router, exact).await).1, "kimi-k2.5@real");
    // An exact model falls over keys, never to another model.
    rig.paid
        .on_model("kimi-k2.5", Act::Fail(ProviderError::ModelNotFound));
    let mut exact = api("c", "hi");
    exact.selector = ModelSelector::Exact("kimi-k2.5".into());
    let events = ask(&rig.router, exact).await;
    assert_eq!(failed_with(&events).kind, FailureKind::Unavailable);
    let other = rig
        .paid
        .calls()
        .iter()
        .filter(|c| c.model == "gpt-oss:120b")
        .count();
    assert_eq!(
        other, 1,
        "only the PaidOnly request; never another model for an exact one"
    );
    let mut unknown = api("c", "hi");
    unknown.selector = ModelSelector::Exact("no-such-model".into());
    let events = ask(&rig.router, unknown).await;
    assert_eq!(failed_with(&events).kind, FailureKind::UnknownModel);
    let free_calls = rig.free.calls().len();
    let mut free = api("c", "hi");
    free.selector = ModelSelector::FreeOnly;
    assert_eq!(started(&ask(&rig.router, free).await).0, "free");
    assert_eq!(rig.free.calls().len(), free_calls + 1);
}

#[tokio::test]
async fn images_and_tools_go_only_to_models_that_take_them() {
    // Defaults: gpt-oss takes tools, kimi-k2.5 takes images and tools; a:free is not described.
    let rig = rig_with(config(0), &["k1"], &["p1"]);
    let mut image = api("c", "what is it?");
    image.prompt.images.push(ImageData {
        media_type: "image/png".into(),
        base64: "AAAA".into(),
    });
    let events = ask(&rig.router, image.clone()).await;
    assert_eq!(
        started(&events).1,
        "openrouter/free@real",
        "OpenRouter's router picks a vision model"
    );
    let mut config = config(0);
    config.openrouter.free_models = vec!["a:free".into()];
    let rig = rig_with(config, &["k1"], &["p1"]);
    let events = ask(&rig.router, image.clone()).await;
    assert_eq!(started(&events).1, "kimi-k2.5@real");
    let mut tools = api("c", "call f {}");
    tools.params.tools = vec![serde_json::json!({"type": "function", "function": {"name": "f"}})];
    tools.params.reasoning = Some(Reasoning::Enabled(true));
    assert_eq!(
        started(&ask(&rig.router, tools).await).1,
        "gpt-oss:120b@real"
    );
    let mut free_image = image.clone();
    free_image.selector = ModelSelector::FreeOnly;
    let failure = failed_with(&ask(&rig.router, free_image).await).clone();
    assert_eq!(failure.kind, FailureKind::BadRequest);
    assert_eq!(failure.message, "No model available here takes images.");
    let mut exact = image;
    exact.selector = ModelSelector::Exact("gpt-oss:120b".into());
    let failure = failed_with(&ask(&rig.router, exact).await).clone();
    assert_eq!(
        failure.message,
        "The model gpt-oss:120b does not take images."
    );
    assert!(
        rig.free.calls().iter().all(|c| c.model != "a:free"),
        "a:free never asked"
    );
}

#[tokio::test]
async fn aliases_resolve_and_wrong_ones_are_refused() {
    let mut c = config(0);
    c.router
        .aliases
        .insert("fast".into(), "gpt-oss:120b".into());
    c.router.aliases.insert("cheap".into(), "free".into());
    let rig = rig_with(c.clone(), &["k1"], &["p1"]);
    let r = &rig.router;
    assert_eq!(
        r.resolve_model("fast"),
        Some(ModelSelector::Exact("gpt-oss:120b".into()))
    );
    assert_eq!(r.resolve_model("cheap"), Some(ModelSelector::FreeOnly));
    assert_eq!(r.resolve_model("auto"), Some(ModelSelector::Policy));
    assert_eq!(r.resolve_model("paid"), Some(ModelSelector::PaidOnly));
    assert_eq!(
        r.resolve_model("a:free"),
        Some(ModelSelector::Exact("a:free".into()))
    );
    assert_eq!(
        r.resolve_model("z-ai/glm:free"),
        Some(ModelSelector::Exact("z-ai/glm:free".into())),
        "any :free id on OpenRouter"
    );
    assert_eq!(
        r.resolve_model("nomic-embed-text-v2-moe"),
        Some(ModelSelector::Exact("nomic-embed-text-v2-moe".into()))
    );
    assert_eq!(r.resolve_model("no-such-model"), None);
    let mut bad = c.clone();
    bad.router
        .aliases
        .insert("x".into(), "no-such-model".into());
    let err = rig.router.reload(&bad).unwrap_err();
    assert!(err.to_string().contains("router.aliases"), "{err}");
    let mut bad = c;
    bad.router
        .aliases
        .insert("auto".into(), "gpt-oss:120b".into());
    assert!(rig.router.reload(&bad).is_err());
}

#[tokio::test]
async fn models_and_embedding_models_carry_capabilities() {
    let rig = rig_with(config(0), &["k1"], &["p1"]);
    let models = rig.router.models();
    let kimi = models.iter().find(|m| m.name == "kimi-k2.5").unwrap();
    assert!(kimi.capabilities.vision && kimi.capabilities.tools && kimi.capabilities.thinking);
    let a = models.iter().find(|m| m.name == "a:free").unwrap();
    assert!(a.capabilities.completion && !a.capabilities.vision && !a.capabilities.tools);
    assert!(models.iter().all(|m| !m.capabilities.embedding));
    let embedding = rig.router.embedding_models();
    assert_eq!(embedding.len(), 1);
    assert_eq!(embedding[0].name, "nomic-embed-text-v2-moe");
    assert!(embedding[0].capabilities.embedding && !embedding[0].capabilities.completion);
}
