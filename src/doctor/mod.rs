//! `switchboard check`: the configuration doctor. First everything start-up validates, through the same
//! path ([`crate::app::validate`]): what `run` or `chat` would reject with exit 78, `check` rejects too.
//! Then, for each OpenRouter key: its account's tier and free requests left today (`GET /key`); whether
//! the configured free models exist (`GET /models`); for each Ollama key: whether it authenticates and
//! which configured models `GET /api/tags` lists; for each platform token: whether the platform accepts it
//! ([`platforms`]: `getMe`, `GET /users/@me`). One line per item, `✓` or `✗` with the reason, key
//! fingerprints only. A route the endpoint lacks (404) is "unknown", not a failure.

pub mod platforms;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

use crate::app;
use crate::clock::{SharedClock, SystemClock};
use crate::config::providers::ProviderKind;
use crate::config::{self, Config, Env, Secrets};
use crate::daemon::config_fatal;
use crate::exit::Fatal;
use crate::providers::http::Timeouts;
use crate::providers::ollama::OllamaClient;
use crate::providers::openai::{Attribution, OpenAiClient};
use crate::providers::ProviderError;
use crate::router::clients;
use crate::router::quota::free_daily_limit;
use crate::secrets::fingerprint;
use crate::text;

/// What a check run found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Items that passed (including "unknown").
    pub passed: usize,
    /// Required items that failed: the command exits non-zero.
    pub failed: usize,
    /// Optional items that are missing (a platform without a token, a provider without keys while
    /// another has some): reported with `✗` but not fatal.
    pub missing_optional: usize,
}

impl std::ops::AddAssign for CheckSummary {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.missing_optional += other.missing_optional;
    }
}

/// The report being written: one line per item, counted.
struct Report<'w, W: Write> {
    out: &'w mut W,
    summary: CheckSummary,
}

impl<W: Write> Report<'_, W> {
    fn ok(&mut self, line: &str) -> std::io::Result<()> {
        self.summary.passed += 1;
        writeln!(self.out, "✓ {line}")
    }
    fn fail(&mut self, line: &str) -> std::io::Result<()> {
        self.summary.failed += 1;
        writeln!(self.out, "✗ {line}")
    }
    fn missing(&mut self, line: &str) -> std::io::Result<()> {
        self.summary.missing_optional += 1;
        writeln!(self.out, "✗ {line}")
    }
}

/// A failed call, phrased for the operator (the error is already free of URLs and keys).
fn why(e: &ProviderError) -> String {
    match e {
        ProviderError::Unauthorized { status } => {
            format!("rejected (HTTP {status}): replace or remove the key")
        }
        ProviderError::PaymentRequired => "no credits (HTTP 402)".into(),
        ProviderError::Connect => "cannot connect: check base_url and the network".into(),
        ProviderError::Timeout => "timed out".into(),
        other => other.to_string(),
    }
}

/// Checks the configuration as start-up does, then every key against the configured endpoints and
/// whether each platform token is present (asking the platforms is [`platforms::ask_platforms`]), and
/// writes the report to `out`. `env` supplies the keys of extra tiers (`key_env`).
pub async fn run_check(
    config: &Config,
    secrets: &Secrets,
    env: &Env,
    out: &mut impl Write,
) -> std::io::Result<CheckSummary> {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut r = Report {
        out,
        summary: CheckSummary::default(),
    };
    match app::validate(config, secrets) {
        Ok(()) => r.ok("configuration: valid (the same checks as start-up)")?,
        Err(e) => r.fail(&format!("configuration: {e}"))?,
    }
    if !app::has_model_keys(config, secrets) {
        r.fail(&format!(
            "models: no provider key is set: {}",
            app::model_keys_help()
        ))?;
    }
    check_openrouter(&mut r, config, secrets, clock.clone()).await?;
    check_ollama(&mut r, config, secrets, clock).await?;
    check_tiers(&mut r, config, env).await?;
    // Platforms: a missing token only means the adapter stays off.
    for (name, var, token) in [
        (
            "telegram",
            config::secrets::TELEGRAM_TOKEN_VAR,
            &secrets.telegram_token,
        ),
        (
            "discord",
            config::secrets::DISCORD_TOKEN_VAR,
            &secrets.discord_token,
        ),
    ] {
        match token {
            Some(t) => r.ok(&format!("{name}: token present ({})", fingerprint(t)))?,
            None => r.missing(&format!("{name}: {var} not set (adapter off)"))?,
        }
    }
    Ok(r.summary)
}

/// OpenRouter: one line per key, then one per configured free model.
async fn check_openrouter<W: Write>(
    r: &mut Report<'_, W>,
    config: &Config,
    secrets: &Secrets,
    clock: SharedClock,
) -> std::io::Result<()> {
    let client = match clients::openrouter(config, clock) {
        Ok(c) => c,
        Err(e) => return r.fail(&format!("openrouter: {e}")),
    };
    if secrets.openrouter_keys.is_empty() {
        return r.missing("openrouter: no key set (free tier off): set OPENROUTER_API_KEY_1");
    }
    for key in &secrets.openrouter_keys {
        let account = config
            .openrouter
            .accounts
            .get(&key.name)
            .map_or_else(|| "own account".to_string(), |a| format!("account {a}"));
        let item = format!("openrouter {} {} ({account})", key.name, key.fingerprint());
        match client.key_info(Some(&key.value)).await {
            Ok(Some(info)) => {
                let tier = match info.is_free_tier {
                    Some(true) => "free tier (never bought credits)",
                    Some(false) => "credits bought",
                    None => "tier unknown",
                };
                let limit = free_daily_limit(info.free_daily_limit, info.is_free_tier);
                let left = match (info.free_remaining, limit) {
                    (Some(left), Some(limit)) => {
                        format!(
                            "{left} of {} left today",
                            text::count(limit, "free request")
                        )
                    }
                    (Some(left), None) => {
                        format!("{} left today", text::count(left, "free request"))
                    }
                    // An older GET /key shape: the tier says the limit, not what is left.
                    (None, Some(limit)) => {
                        format!(
                            "{} a day, left today unknown",
                            text::count(limit, "free request")
                        )
                    }
                    (None, None) => "free requests left today unknown".into(),
                };
                r.ok(&format!("{item}: {tier}, {left}"))?;
            }
            Ok(None) => r.ok(&format!(
                "{item}: tier and free requests left today unknown (this endpoint has no GET /key)"
            ))?,
            Err(e) => r.fail(&format!("{item}: {}", why(&e)))?,
        }
    }
    let first_key = secrets.openrouter_keys.first().map(|k| &k.value);
    match client.models(first_key).await {
        Ok(models) => {
            for wanted in &config.openrouter.free_models {
                free_model_line(r, wanted, models.iter().find(|m| &m.id == wanted))?;
            }
            Ok(())
        }
        Err(ProviderError::ModelNotFound) => {
            r.ok("openrouter models: unknown (this endpoint has no GET /models)")
        }
        Err(e) => r.fail(&format!(
            "openrouter models: GET /models failed: {}",
            why(&e)
        )),
    }
}

/// One configured free model against what `GET /models` listed.
fn free_model_line<W: Write>(
    r: &mut Report<'_, W>,
    wanted: &str,
    listed: Option<&crate::providers::openai::RemoteModel>,
) -> std::io::Result<()> {
    match listed {
        Some(m) if m.is_free => {
            let ctx = m
                .context_length
                .map_or_else(String::new, |c| format!(", context {c}"));
            r.ok(&format!("openrouter model {wanted}: exists, free{ctx}"))
        }
        Some(_) => r.fail(&format!(
            "openrouter model {wanted}: exists but is NOT free (it would cost money): use a :free model"
        )),
        None if wanted == "openrouter/free" => r.ok(&format!(
            "openrouter model {wanted}: router model (OpenRouter picks a free model)"
        )),
        None => r.fail(&format!(
            "openrouter model {wanted}: not listed by GET /models: fix [openrouter].free_models"
        )),
    }
}

/// Ollama Cloud: one line per key.
async fn check_ollama<W: Write>(
    r: &mut Report<'_, W>,
    config: &Config,
    secrets: &Secrets,
    clock: SharedClock,
) -> std::io::Result<()> {
    if secrets.ollama_keys.is_empty() {
        return r.missing("ollama-cloud: no key set (paid tier off): set OLLAMA_API_KEY");
    }
    let client = match clients::ollama(config, clock) {
        Ok(client) => client,
        Err(e) => return r.fail(&format!("ollama-cloud: {e}")),
    };
    for key in &secrets.ollama_keys {
        let item = format!("ollama-cloud {} {}", key.name, key.fingerprint());
        tags_line(r, &client, Some(&key.value), &config.ollama.models, &item).await?;
    }
    Ok(())
}

/// The extra tiers: each one's key, and its models against the endpoint's list.
async fn check_tiers<W: Write>(
    r: &mut Report<'_, W>,
    config: &Config,
    env: &Env,
) -> std::io::Result<()> {
    let timeouts = Timeouts::from_config(&config.router);
    for tier in &config.tiers {
        let key = match &tier.key_env {
            Some(name) => match config::secrets::read(env, name) {
                Ok(Some(k)) => Some(k),
                Ok(None) => {
                    r.fail(&format!("tier {}: {name} is not set", tier.name))?;
                    continue;
                }
                Err(e) => {
                    r.fail(&format!("tier {}: {e}", tier.name))?;
                    continue;
                }
            },
            None => None,
        };
        let fp = key
            .as_ref()
            .map_or_else(|| "no key".to_string(), fingerprint);
        let item = format!("tier {} ({fp})", tier.name);
        match tier.kind {
            ProviderKind::Ollama => match OllamaClient::new(&tier.name, &tier.base_url, timeouts) {
                Ok(c) => tags_line(r, &c, key.as_ref(), &tier.models, &item).await?,
                Err(e) => r.fail(&format!("{item}: {e}"))?,
            },
            ProviderKind::Openai => {
                let client =
                    OpenAiClient::new(&tier.name, &tier.base_url, timeouts, Attribution::default());
                match client {
                    Ok(c) => match c.models(key.as_ref()).await {
                        Ok(models) => {
                            let listed: BTreeSet<&str> =
                                models.iter().map(|m| m.id.as_str()).collect();
                            models_line(r, &item, &tier.models, |m| listed.contains(m))?;
                        }
                        Err(ProviderError::ModelNotFound) => {
                            r.ok(&format!("{item}: models unknown (no GET /models here)"))?;
                        }
                        Err(e) => r.fail(&format!("{item}: {}", why(&e)))?,
                    },
                    Err(e) => r.fail(&format!("{item}: {e}"))?,
                }
            }
        }
    }
    Ok(())
}

async fn tags_line<W: Write>(
    r: &mut Report<'_, W>,
    client: &OllamaClient,
    key: Option<&SecretString>,
    wanted: &[String],
    item: &str,
) -> std::io::Result<()> {
    match client.tags(key).await {
        Ok(tags) => {
            let listed: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
            models_line(r, &format!("{item}: authenticates"), wanted, |m| {
                listed.contains(m)
            })
        }
        Err(e) => r.fail(&format!("{item}: {}", why(&e))),
    }
}

fn models_line<W: Write>(
    r: &mut Report<'_, W>,
    item: &str,
    wanted: &[String],
    listed: impl Fn(&str) -> bool,
) -> std::io::Result<()> {
    let (have, missing): (Vec<&str>, Vec<&str>) =
        wanted.iter().map(String::as_str).partition(|m| listed(m));
    if have.is_empty() {
        return r.fail(&format!(
            "{item}, but lists none of the configured models ({})",
            missing.join(", ")
        ));
    }
    let mut line = format!("{item}; lists {}", have.join(", "));
    if !missing.is_empty() {
        line = format!("{line}; not listed: {}", missing.join(", "));
    }
    r.ok(&line)
}

/// `switchboard check`: loads the configuration and secrets as start-up does, prints the report to
/// stdout — the providers, then the platforms asked about their tokens — and fails with the configuration
/// exit code (78) when a required item failed.
pub async fn check_command(config_path: Option<PathBuf>) -> Result<(), Fatal> {
    let loaded = app::load(config_path.as_deref()).map_err(|e| config_fatal(&e))?;
    let (config, secrets) = (&loaded.config, &loaded.secrets);
    let mut out = std::io::stdout();
    let report_failed =
        |e: std::io::Error| Fatal::Other(anyhow::anyhow!("cannot write the report: {e}"));
    let mut summary = run_check(config, secrets, &loaded.env, &mut out)
        .await
        .map_err(report_failed)?;
    summary += platforms::ask_platforms(config, secrets, &mut out)
        .await
        .map_err(report_failed)?;
    writeln!(
        out,
        "{} passed, {} failed, {} optional missing",
        summary.passed, summary.failed, summary.missing_optional
    )
    .map_err(report_failed)?;
    if summary.failed > 0 {
        return Err(Fatal::Config(format!(
            "{} failed (see the ✗ lines above)",
            text::count(summary.failed as u64, "required check")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chat` exits 78 on `tier_order = ["bogus"]` (the router rejects it at start-up); `check` fails
    /// on it too, naming the key.
    #[tokio::test]
    async fn check_fails_on_a_tier_order_start_up_rejects() {
        let mut config = Config::default();
        config.router.tier_order = vec!["bogus".into()];
        let env = Env::default();
        let mut out = Vec::new();
        let summary = run_check(&config, &Secrets::default(), &env, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(summary.failed >= 1, "{text}");
        assert!(
            text.lines()
                .any(|l| l
                    .starts_with("✗ configuration: configuration error at `router.tier_order[0]`")),
            "{text}"
        );
    }
}
