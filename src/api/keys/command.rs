//! `switchboard keys create|list|show|revoke|usage`: through the running daemon's admin socket when
//! it is up (so the change takes effect at once), else over the store opened directly.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::admin::{self, AdminRequest, AdminResponse};
use super::admission::Limits;
use super::ledger::DayUsage;
use super::{KeyRecord, KeyView, Keys, NewKey};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Env;
use crate::exit::Fatal;

/// `switchboard keys …`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// The key commands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a key and print it once (only its hash is kept).
    Create(CreateArgs),
    /// Every key with its limits, today's use and when it was last used.
    List,
    /// One key.
    Show {
        /// The key's id (the part after `sb-`).
        id: String,
    },
    /// Revoke a key: requests with it are refused from now on.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// The usage ledger: one key's or every key's, per UTC day.
    Usage {
        /// The key's id; every key without one.
        id: Option<String>,
        /// How many days back, today included (at most 31).
        #[arg(long, default_value_t = 1)]
        days: u32,
    },
}

/// `keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for the key (who or what uses it).
    #[arg(long)]
    pub name: String,
    /// Tiers it may use: free, paid or free,paid (default: all).
    #[arg(long, value_delimiter = ',')]
    pub tiers: Option<Vec<String>>,
    /// Models it may use, comma-separated (default: all). Virtual names (auto, free, paid) count.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Requests per UTC day.
    #[arg(long)]
    pub daily_requests: Option<u64>,
    /// Tokens per UTC day (prompt + completion).
    #[arg(long)]
    pub daily_tokens: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// The UTC date from which the key stops working (YYYY-MM-DD).
    #[arg(long)]
    pub expires: Option<String>,
    /// May read /metrics, /usage and /health's detail.
    #[arg(long)]
    pub operator: bool,
}

impl CreateArgs {
    fn into_new(self) -> Result<NewKey, Fatal> {
        let expires_ms = self
            .expires
            .map(|d| {
                chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp_millis())
                    .ok_or_else(|| {
                        Fatal::Config(format!("--expires `{d}` is not a date like 2027-01-31"))
                    })
            })
            .transpose()?;
        Ok(NewKey {
            name: self.name,
            tiers: self.tiers,
            models: self.models,
            limits: Limits {
                rpm: self.rpm,
                daily_requests: self.daily_requests,
                daily_tokens: self.daily_tokens,
                concurrency: self.concurrency,
            },
            expires_ms,
            operator: self.operator,
        })
    }
}

/// Runs `switchboard keys …` with the config at `config_path`.
pub async fn keys_command(config_path: Option<PathBuf>, args: KeysArgs) -> Result<(), Fatal> {
    let loaded =
        crate::app::load(config_path.as_deref()).map_err(|e| crate::daemon::config_fatal(&e))?;
    let request = match args.action {
        KeysAction::Create(c) => AdminRequest::Create(c.into_new()?),
        KeysAction::List => AdminRequest::List,
        KeysAction::Show { id } => AdminRequest::Show { id },
        KeysAction::Revoke { id } => AdminRequest::Revoke { id },
        KeysAction::Usage { id, days } => AdminRequest::Usage { id, days },
    };
    let state_dir = loaded.config.store.state_dir(&loaded.env);
    let socket = admin::socket_path(&state_dir);
    let response = match admin::send(&socket, &request).await {
        Ok(Some(response)) => response,
        Ok(None) => offline(&loaded.config, &loaded.env, request).await?,
        Err(e) => {
            return Err(Fatal::Other(anyhow::anyhow!(
                "cannot talk to the running daemon at {}: {e}",
                socket.display()
            )))
        }
    };
    print(&response, args.json)
}

/// Runs `request` over the store opened by this process (no daemon runs).
async fn offline(
    config: &crate::config::Config,
    env: &Env,
    request: AdminRequest,
) -> Result<AdminResponse, Fatal> {
    let clock: SharedClock = std::sync::Arc::new(SystemClock);
    let store = crate::store::open::open_store(config, env, &clock)
        .await
        .map_err(|e| match e {
            Fatal::Conflict(_) => Fatal::Conflict(
                "the store is held by a running switchboard without its admin socket (is [api] enabled?); \
                 stop it, or enable the API, to manage keys"
                    .into(),
            ),
            other => other,
        })?;
    let keys = Keys::open(
        store.clone().into_state(),
        clock.clone(),
        config.ollama.prices.clone(),
    )
    .map_err(crate::store::open::store_fatal)?;
    let response = admin::execute(&keys, request);
    let _ = keys.ledger.flush(clock.now_ms());
    store
        .flush()
        .await
        .map_err(|e| Fatal::Other(anyhow::anyhow!("writing the store failed: {e}")))?;
    Ok(response)
}

fn print(response: &AdminResponse, json: bool) -> Result<(), Fatal> {
    if let AdminResponse::Error { message } = response {
        return Err(Fatal::Config(message.clone()));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(response).unwrap_or_default()
        );
        return Ok(());
    }
    match response {
        AdminResponse::Created { key, secret } => {
            println!("{secret}");
            eprintln!(
                "key {} ({}) created. The line above is the key: it is shown only this once.\n{}",
                key.id,
                key.name,
                describe(key)
            );
        }
        AdminResponse::Keys { keys } => {
            if keys.is_empty() {
                println!("no keys yet: switchboard keys create --name NAME");
            }
            for k in keys {
                println!("{}", line(k));
            }
        }
        AdminResponse::Revoked { key } => println!("key {} ({}) revoked", key.id, key.name),
        AdminResponse::Usage { usage } => {
            for (key, days) in usage {
                println!("{} ({})", key.id, key.name);
                for d in days {
                    println!("  {}", day_line(d));
                }
            }
        }
        AdminResponse::Error { .. } => {}
    }
    Ok(())
}

fn describe(k: &KeyRecord) -> String {
    let list = |v: &Option<Vec<String>>| v.as_ref().map_or_else(|| "all".into(), |v| v.join(","));
    let n = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let l = &k.limits;
    format!(
        "tiers {}, models {}, rpm {}, requests/day {}, tokens/day {}, concurrency {}{}{}",
        list(&k.tiers),
        list(&k.models),
        n(l.rpm.map(u64::from)),
        n(l.daily_requests),
        n(l.daily_tokens),
        n(l.concurrency.map(u64::from)),
        if k.operator { ", operator" } else { "" },
        if k.revoked_ms.is_some() {
            ", REVOKED"
        } else {
            ""
        },
    )
}

fn line(v: &KeyView) -> String {
    let last = v.today.last_used_ms.map_or_else(
        || "not used today".into(),
        |ms| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| format!("last used {}", t.format("%H:%M:%S UTC")))
                .unwrap_or_default()
        },
    );
    format!(
        "{}  {:<20} {}\n    today: {}; {last}",
        v.key.id,
        v.key.name,
        describe(&v.key),
        day_line(&v.today)
    )
}

fn day_line(d: &DayUsage) -> String {
    format!(
        "{} answered {} failed {} refused {} tokens {}+{}{} cost ${:.4}",
        d.date,
        d.answered,
        d.failed,
        d.refused,
        d.prompt_tokens,
        d.completion_tokens,
        if d.estimated_tokens > 0 {
            format!(" ({} estimated)", d.estimated_tokens)
        } else {
            String::new()
        },
        d.cost_usd
    )
}
