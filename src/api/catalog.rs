//! The models a caller may name, for both surfaces' listings: the virtual names (`auto`, `free`,
//! `paid`) with what the models behind them can do, then every configured model with its real
//! context length and capabilities.

use crate::api::auth::Caller;
use crate::domain::TierName;
use crate::generation::Capabilities;
use crate::router::{LlmRouter, ModelInfo};

/// The virtual names, with what each routes to.
pub const VIRTUAL: [(&str, &str); 3] = [
    ("auto", "the free-first policy: free tiers first, then paid"),
    ("free", "free tiers only"),
    ("paid", "paid tiers only"),
];

/// One listed model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name a client sends.
    pub name: String,
    /// The provider serving it (`switchboard` for a virtual name).
    pub provider: String,
    /// Its tier (`None` for a virtual name).
    pub tier: Option<TierName>,
    /// Its context window (the largest behind a virtual name).
    pub context_window: usize,
    /// What it can do (anything a model behind a virtual name can do).
    pub capabilities: Capabilities,
}

impl Entry {
    /// The model family: the leading letters of the name's last path segment (`llama` for
    /// `meta-llama/llama-3.3-70b-instruct:free`), `switchboard` for a virtual name.
    pub fn family(&self) -> String {
        if self.tier.is_none() {
            return "switchboard".into();
        }
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        let family: String = last
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        if family.is_empty() {
            "unknown".into()
        } else {
            family
        }
    }

    /// The parameter size in the name (`70B` for `llama-3.3-70b`), else empty.
    pub fn parameter_size(&self) -> String {
        self.name
            .split(['-', ':', '/', '_'])
            .find(|part| {
                part.len() > 1
                    && part.ends_with(['b', 'B'])
                    && part[..part.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.')
            })
            .map(str::to_ascii_uppercase)
            .unwrap_or_default()
    }

    /// A digest derived from the name (Open WebUI keys on it; one constant for all would collide).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(self.name.as_bytes());
        hash.iter().fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }

    /// Ollama's `capabilities` list.
    pub fn capability_names(&self) -> Vec<&'static str> {
        let c = self.capabilities;
        [
            (c.completion, "completion"),
            (c.tools, "tools"),
            (c.vision, "vision"),
            (c.thinking, "thinking"),
            (c.embedding, "embedding"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

fn union(models: &[&ModelInfo]) -> (usize, Capabilities) {
    let mut caps = Capabilities::default();
    let mut window = 0;
    for m in models {
        window = window.max(m.context_window);
        let c = m.capabilities;
        caps.completion |= c.completion;
        caps.tools |= c.tools;
        caps.vision |= c.vision;
        caps.thinking |= c.thinking;
        caps.embedding |= c.embedding;
    }
    (window, caps)
}

/// Everything `caller` may name, virtual names first.
pub fn entries(router: &dyn LlmRouter, caller: &Caller) -> Vec<Entry> {
    let models: Vec<ModelInfo> = router
        .models()
        .into_iter()
        .filter(|m| caller.may_use(&m.name, &m.tier))
        .collect();
    let mut out = Vec::with_capacity(models.len() + VIRTUAL.len());
    for (name, _) in VIRTUAL {
        let behind: Vec<&ModelInfo> = models
            .iter()
            .filter(|m| match name {
                "free" => !m.tier.is_paid(),
                "paid" => m.tier.is_paid(),
                _ => true,
            })
            .collect();
        if behind.is_empty() || (name == "paid" && !caller.paid_allowed()) {
            continue;
        }
        let (context_window, capabilities) = union(&behind);
        out.push(Entry {
            name: name.into(),
            provider: "switchboard".into(),
            tier: None,
            context_window,
            capabilities,
        });
    }
    out.extend(models.into_iter().map(|m| Entry {
        name: m.name,
        provider: m.provider,
        tier: Some(m.tier),
        context_window: m.context_window,
        capabilities: m.capabilities,
    }));
    out
}

/// The entry for `name`, if `caller` may name it.
pub fn find(router: &dyn LlmRouter, caller: &Caller, name: &str) -> Option<Entry> {
    entries(router, caller).into_iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            provider: "openrouter".into(),
            tier: Some(TierName::free()),
            context_window: 1,
            capabilities: Capabilities::default(),
        }
    }

    #[test]
    fn family_size_and_digest_come_from_the_name() {
        let e = entry("meta-llama/llama-3.3-70b-instruct:free");
        assert_eq!(e.family(), "llama");
        assert_eq!(e.parameter_size(), "70B");
        assert_eq!(e.digest().len(), 64);
        assert_ne!(e.digest(), entry("other").digest());
        assert_eq!(entry("gpt-oss:120b").parameter_size(), "120B");
    }
}
