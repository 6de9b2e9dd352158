//! The doctor asks each platform about its token, as it asks the providers about their keys: Telegram's
//! `getMe` on the configured Bot API base URL (`telegram.api_url`) and Discord's `GET /users/@me` through
//! the configured REST base (`discord.proxy_url`, else Discord itself) — the same clients the adapters
//! use, so a token `check` accepts is one `run` will accept.

use std::io::Write;
use std::time::Duration;

use secrecy::SecretString;

use super::{CheckSummary, Report};
use crate::config::secrets::{DISCORD_TOKEN_VAR, TELEGRAM_TOKEN_VAR};
use crate::config::{Config, Secrets};
use crate::platforms::discord::rest;
use crate::platforms::telegram::api::{Api, ApiFailure};
use crate::secrets::fingerprint;

/// The longest one platform question may take. Both clients bound each request themselves (teloxide's
/// 17 s total, the Discord client's request timeout); this outer bound keeps `check` finite whatever a
/// proxy does, and is above both so their own, clearer errors come first.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks every enabled platform whose token is set whether it accepts the token, one `✓`/`✗` line each.
pub async fn ask_platforms(
    config: &Config,
    secrets: &Secrets,
    out: &mut impl Write,
) -> std::io::Result<CheckSummary> {
    let mut r = Report {
        out,
        summary: CheckSummary::default(),
    };
    if let (true, Some(token)) = (config.telegram.enabled, &secrets.telegram_token) {
        match bounded(ask_telegram(token, &config.telegram.api_url)).await {
            Ok(line) => r.ok(&line)?,
            Err(line) => r.fail(&line)?,
        }
    }
    if let (true, Some(token)) = (config.discord.enabled, &secrets.discord_token) {
        match bounded(ask_discord(token, config.discord.proxy_url.as_deref())).await {
            Ok(line) => r.ok(&line)?,
            Err(line) => r.fail(&line)?,
        }
    }
    Ok(r.summary)
}

async fn bounded(
    ask: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", ASK_TIMEOUT.as_secs())))
}

/// `getMe` with the token: `Ok` with the line to print when Telegram knows the bot.
async fn ask_telegram(token: &SecretString, api_url: &str) -> Result<String, String> {
    let fp = fingerprint(token);
    let api = Api::new(token, api_url).map_err(|e| format!("telegram: {e}"))?;
    match api.get_me().await {
        Ok(me) => Ok(format!(
            "telegram: getMe accepts {TELEGRAM_TOKEN_VAR} ({fp}): the bot is @{}",
            me.username()
        )),
        Err(ApiFailure::Unauthorized) => Err(format!(
            "telegram: getMe at {api_url} rejected {TELEGRAM_TOKEN_VAR} ({fp}) as unauthorized: copy the \
             token from @BotFather again, or remove it to run without Telegram"
        )),
        Err(e) => Err(format!(
            "telegram: cannot ask getMe at {api_url} ({e}): check telegram.api_url and the network"
        )),
    }
}

/// `GET /users/@me` with the token: `Ok` with the line to print when Discord knows the bot.
async fn ask_discord(token: &SecretString, proxy_url: Option<&str>) -> Result<String, String> {
    let fp = fingerprint(token);
    let (http, _, _) = rest::build_http(token, proxy_url).map_err(|e| format!("discord: {e}"))?;
    let base = proxy_url.unwrap_or("https://discord.com");
    match http.get_current_user().await {
        Ok(me) => Ok(format!(
            "discord: GET /users/@me accepts {DISCORD_TOKEN_VAR} ({fp}): the bot is {}",
            me.name
        )),
        Err(serenity::Error::Http(e))
            if e.status_code()
                .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403) =>
        {
            Err(format!(
                "discord: GET /users/@me at {base} rejected {DISCORD_TOKEN_VAR} ({fp}) as unauthorized: \
                 copy the bot token from the Developer Portal (Bot → Reset Token) again, or remove it to \
                 run without Discord"
            ))
        }
        Err(e) => Err(format!(
            "discord: cannot ask GET /users/@me at {base} ({e}): check discord.proxy_url and the network"
        )),
    }
}
