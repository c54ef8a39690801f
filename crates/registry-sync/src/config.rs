//! The configuration file: parsed strictly, validated whole, and every error names the
//! file, the line and the key, because a mistake here is the one a user fixes by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use registry_sync_istio::Location;
use registry_sync_translate::{EndpointMode, HostTemplate, RegistrySettings, Settings};
use serde::Deserialize;
use serde_saphyr::Spanned;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    File,
}

impl fmt::Display for RegistryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryKind::File => "file",
        })
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawEndpointMode {
    Inline,
    WorkloadEntry,
    Auto,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawLocation {
    MeshInternal,
    MeshExternal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    instance: Option<Spanned<String>>,
    registries: Spanned<Vec<RawRegistry>>,
    #[serde(default)]
    sinks: RawSinks,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    name: Spanned<String>,
    kind: Spanned<RegistryKind>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Option<Spanned<String>>,
    #[serde(default)]
    endpoints: Option<RawEndpointMode>,
    namespace: Spanned<String>,
    #[serde(default)]
    location: Option<RawLocation>,
    #[serde(default)]
    sidecar: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinks {
    #[serde(default)]
    files: Option<RawFilesSink>,
    #[serde(default)]
    stdout: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesSink {
    dir: Spanned<String>,
}

/// Where a registry's data comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    File { path: PathBuf },
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub name: String,
    pub kind: RegistryKind,
    pub source: SourceConfig,
    pub settings: RegistrySettings,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinksConfig {
    /// Directory of YAML files, resolved against the config file's directory.
    pub files: Option<PathBuf>,
    pub stdout: bool,
}

impl SinksConfig {
    pub fn is_empty(&self) -> bool {
        self.files.is_none() && !self.stdout
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
}

/// The default host template of a kind, used when `hosts` is not set.
fn default_hosts(kind: RegistryKind) -> &'static str {
    match kind {
        RegistryKind::File => "{service}.{namespace}.{registry}",
    }
}

/// DNS-1123 label: what registry names and Kubernetes namespaces must be.
fn is_dns_label(s: &str) -> bool {
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
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let invalid = |line: u64, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            message,
        };

        let instance = match raw.instance {
            Some(instance) if !is_dns_label(&instance.value) => {
                return Err(invalid(
                    instance.referenced.line(),
                    "instance".into(),
                    format!(
                        "{:?} must be a DNS label (lowercase letters, digits and '-', at most 63)",
                        instance.value
                    ),
                ));
            }
            Some(instance) => instance.value,
            None => "default".to_string(),
        };

        if raw.registries.value.is_empty() {
            return Err(invalid(
                raw.registries.referenced.line(),
                "registries".into(),
                "at least one registry is needed".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut registries = Vec::new();
        for (index, r) in raw.registries.value.into_iter().enumerate() {
            let key = |field: &str| format!("registries[{index}].{field}");
            let name = r.name.value;
            if !is_dns_label(&name) {
                return Err(invalid(
                    r.name.referenced.line(),
                    key("name"),
                    format!("{name:?} must be a DNS label (lowercase letters, digits and '-', at most 63)"),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    r.name.referenced.line(),
                    key("name"),
                    format!("{name:?} is used by two registries"),
                ));
            }
            if !is_dns_label(&r.namespace.value) {
                return Err(invalid(
                    r.namespace.referenced.line(),
                    key("namespace"),
                    format!("{:?} is not a valid Kubernetes namespace name", r.namespace.value),
                ));
            }
            let kind = r.kind.value;
            let hosts = match &r.hosts {
                Some(h) => HostTemplate::parse(&h.value)
                    .map_err(|e| invalid(h.referenced.line(), key("hosts"), e.to_string()))?,
                None => HostTemplate::parse(default_hosts(kind)).expect("built-in templates are valid"),
            };
            let source = match kind {
                RegistryKind::File => {
                    let Some(p) = &r.path else {
                        return Err(invalid(
                            r.kind.referenced.line(),
                            key("path"),
                            "a registry of kind `file` needs `path`, the services file".into(),
                        ));
                    };
                    if p.value.trim().is_empty() {
                        return Err(invalid(
                            p.referenced.line(),
                            key("path"),
                            "must not be empty".into(),
                        ));
                    }
                    SourceConfig::File {
                        path: base.join(&p.value),
                    }
                }
            };
            registries.push(RegistryConfig {
                name,
                kind,
                source,
                settings: RegistrySettings {
                    hosts,
                    namespace: r.namespace.value,
                    endpoints: match r.endpoints {
                        Some(RawEndpointMode::Inline) => EndpointMode::Inline,
                        Some(RawEndpointMode::WorkloadEntry) => EndpointMode::WorkloadEntry,
                        Some(RawEndpointMode::Auto) | None => EndpointMode::Auto,
                    },
                    location: match r.location {
                        Some(RawLocation::MeshExternal) => Location::MeshExternal,
                        Some(RawLocation::MeshInternal) | None => Location::MeshInternal,
                    },
                    sidecar: r.sidecar,
                },
            });
        }

        let mut sinks = SinksConfig {
            files: None,
            stdout: raw.sinks.stdout,
        };
        if let Some(files) = raw.sinks.files {
            if files.dir.value.trim().is_empty() {
                return Err(invalid(
                    files.dir.referenced.line(),
                    "sinks.files.dir".into(),
                    "must not be empty".into(),
                ));
            }
            sinks.files = Some(base.join(&files.dir.value));
        }
        Ok(Config {
            path: path.to_path_buf(),
            instance,
            registries,
            sinks,
        })
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
        }
    }

    pub fn registry_names(&self) -> BTreeSet<String> {
        self.registries.iter().map(|r| r.name.clone()).collect()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
