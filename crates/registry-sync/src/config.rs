//! The configuration file: parsed strictly, validated whole, and every error names the
//! file, the line and the key, because a mistake here is the one a user fixes by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use registry_sync_translate::{Override, RegistrySettings, SecretKeys, Settings};
use serde::Deserialize;
use serde_saphyr::Spanned;

mod kubernetes;
mod mcp;
mod overrides;
mod registry;
mod sections;
mod selection;

use kubernetes::RawKubernetesSink;
pub use kubernetes::{KubernetesConfig, LeaderElectionConfig};
pub use mcp::{McpConfig, McpTls};
use mcp::{RawMcpSink, mcp_config};
pub use registry_sync_sources::registry::SourceConfig;
use sections::{
    admin_section, built_sinks_section, files_section, health_section, instance_section, kubernetes_section,
    registries_section, safety_section,
};

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}, line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: u64,
        key: String,
        message: String,
    },
}

/// A YAML or schema error in words, without the values of the file: the parser's own
/// text quotes the offending line and scalar, and the line may hold a token under a
/// mistyped key. Keys (in backticks) and the position stay; quoted values and numbers
/// go.
fn syntax_message(error: &serde_saphyr::Error) -> String {
    let plain = error
        .without_snippet()
        .render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
    let redacted = redact_scalars(&plain);
    match error.location() {
        Some(at) if !redacted.contains("line") => {
            format!("line {}, column {}: {redacted}", at.line(), at.column())
        }
        _ => redacted,
    }
}

/// Replaces every `"…"` / `'…'` span, and the backticked value after a scalar type
/// word (`integer `5``), with `…`. An apostrophe inside a word (`a registry's
/// address`) is our own words, not a quote: it is kept, and so is what follows it.
fn redact_scalars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['"', '\'', '`']) {
        let quote = rest[i..].chars().next().unwrap_or('"');
        let (before, after) = rest.split_at(i);
        let after = &after[1..];
        let in_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        if quote == '\'' && in_word(before.chars().next_back()) && in_word(after.chars().next()) {
            out.push_str(before);
            out.push('\'');
            rest = after;
            continue;
        }
        out.push_str(before);
        let Some(end) = after.find(quote) else {
            out.push(quote);
            out.push('…');
            return out;
        };
        let value_word = ["integer", "floating point", "boolean", "character", "value"]
            .iter()
            .any(|w| before.trim_end().ends_with(w));
        if quote == '`' && !value_word {
            out.push('`');
            out.push_str(&after[..end]);
            out.push('`');
        } else {
            out.push(quote);
            out.push('…');
            out.push(quote);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// What a section's check reports: the line, the key and what is wrong.
type Invalid<'a> = dyn Fn(u64, String, String) -> ConfigError + 'a;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    instance: Option<Spanned<String>>,
    registries: Spanned<Vec<registry::RawRegistry>>,
    #[serde(default)]
    sinks: RawSinks,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    overrides: Vec<overrides::RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    #[serde(default)]
    status_listen: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    #[serde(default)]
    max_delete_share: Option<Spanned<f64>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    /// Replaces the built-in list of metadata keys that name secrets.
    #[serde(default)]
    secret_keys: Option<Vec<String>>,
    #[serde(default)]
    confirm_mass_delete: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinks {
    #[serde(default)]
    files: Option<RawFilesSink>,
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    kubernetes: Option<RawKubernetesSink>,
    #[serde(default)]
    mcp: Option<RawMcpSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesSink {
    dir: Spanned<String>,
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub name: String,
    /// The checked keys of its kind ([`SourceConfig::kind`] names it).
    pub source: SourceConfig,
    pub settings: RegistrySettings,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinksConfig {
    /// Directory of YAML files, resolved against the config file's directory.
    pub files: Option<PathBuf>,
    pub stdout: bool,
    pub kubernetes: Option<KubernetesConfig>,
    /// Where istiod dials this MCP-over-xDS config source.
    pub mcp: Option<McpConfig>,
}

impl SinksConfig {
    pub fn is_empty(&self) -> bool {
        self.files.is_none() && !self.stdout && self.kubernetes.is_none() && self.mcp.is_none()
    }
}

/// `safety`.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetyConfig {
    /// At most this share (0–1) of one registry's objects or endpoints may go within
    /// `guard_window`.
    pub max_delete_share: f64,
    /// How far back the mass-change guard looks for a registry's largest view.
    pub guard_window: std::time::Duration,
    /// Mass deletions go ahead without holding back.
    pub confirm_mass_delete: bool,
}

/// Long enough to span several passes of an eroding registry and a health-check layer's
/// flapping; short enough that a real, gradual decommissioning is not held.
pub const DEFAULT_GUARD_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_delete_share: 0.5,
            guard_window: DEFAULT_GUARD_WINDOW,
            confirm_mass_delete: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// This installation's identity, stamped on every object it writes.
    pub instance: String,
    /// In the order of the file.
    pub registries: Vec<RegistryConfig>,
    pub sinks: SinksConfig,
    pub safety: SafetyConfig,
    /// Where `run` serves /metrics, /healthz and /readyz; `None`: not served.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Where the status page and its search are served, when not on `admin_listen`:
    /// probes and metrics are for the kubelet and Prometheus, the page (which names
    /// every service and instance) for an operator with a port-forward.
    pub status_listen: Option<std::net::SocketAddr>,
    /// `overrides`, in the file's order.
    pub overrides: Vec<Override>,
}

/// DNS-1123 label: what registry names and Kubernetes namespaces must be.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(&e),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let invalid = |line: u64, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            message,
        };
        let secret_keys = raw
            .safety
            .secret_keys
            .as_ref()
            .map_or_else(SecretKeys::default, SecretKeys::new);
        let instance_set = raw.instance.is_some();
        let mut instance = instance_section(raw.instance, &invalid)?;
        let (registries, health_lines) = registries_section(raw.registries, &base, &secret_keys, &invalid)?;
        let overrides = overrides::check(&raw.overrides, &registries)
            .map_err(|(line, key, message)| invalid(line, key, message))?;
        built_sinks_section(&raw.sinks, &invalid)?;
        let kubernetes = match raw.sinks.kubernetes {
            Some(k) => Some(kubernetes_section(
                k,
                &mut instance,
                instance_set,
                &base,
                &invalid,
            )?),
            None => None,
        };
        let safety = safety_section(&raw.safety, &invalid)?;
        let mcp = match raw.sinks.mcp {
            Some(mcp) => Some(mcp_config(mcp, &base, &invalid)?),
            None => None,
        };
        let files = match raw.sinks.files {
            Some(files) => Some(files_section(&files, &base, &invalid)?),
            None => None,
        };
        let sinks = SinksConfig {
            files,
            stdout: raw.sinks.stdout,
            kubernetes,
            mcp,
        };
        health_section(&sinks, &registries, &health_lines, &invalid)?;
        let (admin_listen, status_listen) = admin_section(raw.admin.as_ref(), &invalid)?;
        Ok(Config {
            path: path.to_path_buf(),
            instance,
            registries,
            sinks,
            safety,
            admin_listen,
            status_listen,
            overrides,
        })
    }

    /// Every key of the file outside the registries' kinds, by the section it is in
    /// (`sinks.kubernetes`), from the config's own types: what the docs must cover.
    pub fn keys() -> Vec<(&'static str, &'static [&'static str])> {
        use registry_sync_sources::config::keys_of;
        vec![
            ("", keys_of::<RawConfig>()),
            ("registries[]", registry::COMMON_KEYS),
            ("sinks", keys_of::<RawSinks>()),
            ("sinks.files", keys_of::<RawFilesSink>()),
            ("sinks.kubernetes", keys_of::<RawKubernetesSink>()),
            (
                "sinks.kubernetes.leader_election",
                keys_of::<kubernetes::RawLeaderElection>(),
            ),
            ("sinks.mcp", keys_of::<RawMcpSink>()),
            ("safety", keys_of::<RawSafety>()),
            ("admin", keys_of::<RawAdmin>()),
            ("registries[].select", keys_of::<selection::RawSelect>()),
            (
                "registries[].select.services",
                keys_of::<selection::RawServiceSelect>(),
            ),
            (
                "registries[].select.instances",
                keys_of::<selection::RawInstanceSelect>(),
            ),
            ("overrides[]", keys_of::<overrides::RawOverride>()),
            ("overrides[].ports[]", keys_of::<overrides::RawPortOverride>()),
        ]
    }

    /// The settings translation needs.
    pub fn translate_settings(&self) -> Settings {
        Settings {
            instance: self.instance.clone(),
            registries: self
                .registries
                .iter()
                .map(|r| (r.name.clone(), r.settings.clone()))
                .collect::<BTreeMap<_, _>>(),
            overrides: self.overrides.clone(),
        }
    }

    /// Every namespace objects may land in: each registry's own and those its
    /// `allowed_namespaces` lists.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let mut namespaces = BTreeSet::new();
        for registry in &self.registries {
            namespaces.insert(registry.settings.namespace.clone());
            if let Some(rule) = &registry.settings.namespace_rule {
                namespaces.extend(rule.allowed.iter().cloned());
            }
        }
        namespaces
    }

    pub fn registry_names(&self) -> BTreeSet<String> {
        self.registries.iter().map(|r| r.name.clone()).collect()
    }

    /// An empty index of the configured registries.
    pub fn index(&self) -> registry_sync_index::Index {
        registry_sync_index::Index::new(self.translate_settings())
    }

    /// What every writer of this installation shares: its owner and guard.
    pub fn writer_settings(&self) -> registry_sync_writer::WriterSettings {
        registry_sync_writer::WriterSettings {
            owner: registry_sync_plan::Owner::new(self.instance.clone()),
            max_delete_percent: (!self.safety.confirm_mass_delete)
                .then(|| (self.safety.max_delete_share * 100.0).round() as u32),
            guard_window: self.safety.guard_window,
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[cfg(all(test, feature = "file"))]
#[path = "config/controls_tests.rs"]
mod controls_tests;
