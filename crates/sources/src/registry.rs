//! The seam every registry kind plugs into: its config block, its check, its default
//! host template, and how it is read once or watched. A kind implements [`Kind`] in
//! its own module and takes one line in the `registries!` list of lib.rs, which
//! declares the module and the dispatch; nothing else in the tree names it.

use std::future::Future;

use registry_sync_catalog::RegistrySnapshot;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SourceEvent;
pub use crate::config::{BlockError, Context};

/// One kind of registry.
pub trait Kind {
    /// The keys a registry entry of this kind may set (besides the common ones:
    /// name, kind, namespace, hosts, endpoints, location, sidecar). Strict: an
    /// unknown key is an error (`#[serde(deny_unknown_fields)]`).
    type Block: DeserializeOwned;
    /// What the source runs on, checked.
    type Config: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    fn configure(block: Self::Block, cx: &Context) -> Result<Self::Config, BlockError>;

    /// The `hosts` template of a registry that sets none.
    fn default_hosts(config: &Self::Config) -> &'static str;

    /// Reads the registry once (`once`, `plan`, `render`, `check`).
    fn load(
        registry: &str,
        config: &Self::Config,
    ) -> impl Future<Output = Result<RegistrySnapshot, Self::Error>> + Send;

    /// Emits the registry's state, then its changes, until `cancel` fires.
    fn watch(
        registry: &str,
        config: &Self::Config,
        tx: mpsc::Sender<SourceEvent>,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// [`Kind::load`] and [`Kind::watch`] for a source built as `Source::new(registry,
/// config)` with an async `load(&self)` and a `watch(self, tx, cancel)`.
#[allow(unused_macros)]
macro_rules! load_and_watch {
    () => {
        fn load(
            registry: &str,
            config: &Self::Config,
        ) -> impl std::future::Future<
            Output = Result<registry_sync_catalog::RegistrySnapshot, Self::Error>,
        > + Send {
            let source = Self::new(registry, config.clone());
            async move { source.load().await }
        }

        fn watch(
            registry: &str,
            config: &Self::Config,
            tx: tokio::sync::mpsc::Sender<crate::SourceEvent>,
            cancel: tokio_util::sync::CancellationToken,
        ) -> impl std::future::Future<Output = ()> + Send + 'static {
            Self::new(registry, config.clone()).watch(tx, cancel)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use load_and_watch;

/// Turns a block's deserialization error into the key it concerns and words without
/// the values (serde quotes what it could not read, and that may be a secret).
fn block_error(
    error: serde_path_to_error::Error<serde_json::Error>,
    keys: &[&str],
    kind: &str,
) -> BlockError {
    let inner = error.inner().to_string();
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        return BlockError::new(
            key,
            format!(
                "does not apply to a registry of kind `{kind}`; its keys are {}",
                keys.join(", ")
            ),
        );
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        return BlockError::new(key, "is required");
    }
    let key = error
        .path()
        .iter()
        .next()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "kind".into());
    let expected = inner.split_once("expected ").map_or("another type", |(_, e)| e);
    BlockError::new(&key, format!("has the wrong type: expected {expected}"))
}

/// YAML scalars are text (`session_timeout: 10`, `datacenter: 2024`): numbers and
/// booleans reach a block as their text, and the few numeric keys read text too
/// ([`crate::config::number`]).
fn as_text(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(as_text).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, as_text(v))).collect()),
        Value::Null => Value::Null,
        text @ Value::String(_) => text,
    }
}

pub(crate) fn configure_kind<K: Kind>(
    kind: &str,
    block: serde_json::Value,
    cx: &Context,
) -> Result<K::Config, BlockError> {
    let block: K::Block = serde_path_to_error::deserialize(as_text(block))
        .map_err(|e| block_error(e, crate::config::keys_of::<K::Block>(), kind))?;
    K::configure(block, cx)
}

/// Declares each kind's module (behind the Cargo feature of its name) and the dispatch
/// over all of them ([`SourceConfig`] and the rest, re-exported here). Invoked once, in
/// lib.rs, with one line per kind.
macro_rules! registries {
    ($($kind:literal => $Variant:ident($module:ident :: $Source:ident)),* $(,)?) => {
        $(#[cfg(feature = $kind)] pub mod $module;)*

        /// The dispatch over every kind (see [`crate::registry`]).
        pub mod dispatch {
            use registry_sync_catalog::RegistrySnapshot;
            use tokio::sync::mpsc;
            use tokio_util::sync::CancellationToken;

            use crate::SourceEvent;
            use crate::registry::{BlockError, Context, Kind, configure_kind};

            /// A registry's checked config, of one of the kinds this build has.
            #[derive(Clone, Debug, PartialEq)]
            pub enum SourceConfig {
                $(#[cfg(feature = $kind)] $Variant(Box<<crate::$module::$Source as Kind>::Config>),)*
            }

            /// Why a registry could not be read; each kind's own error.
            #[derive(Debug, thiserror::Error)]
            pub enum SourceError {
                $(#[cfg(feature = $kind)] #[error(transparent)] $Variant(<crate::$module::$Source as Kind>::Error),)*
            }

            /// Every kind, built into this binary or not (the Cargo feature of each has its
            /// name), so a kind left out is named as such rather than as unknown.
            pub const KINDS: &[&str] = &[$($kind),*];

            /// Checks `block` (the registry entry's keys other than the common ones) as a
            /// registry of `kind`. `None`: this build has no such kind.
            pub fn configure(kind: &str, block: serde_json::Value, cx: &Context) -> Option<Result<SourceConfig, BlockError>> {
                match kind {
                    $(#[cfg(feature = $kind)] $kind => Some(
                        configure_kind::<crate::$module::$Source>(kind, block, cx).map(|c| SourceConfig::$Variant(Box::new(c)))
                    ),)*
                    _ => None,
                }
            }

            /// The keys of `kind`'s block; `None` when this build lacks it.
            pub fn keys(kind: &str) -> Option<&'static [&'static str]> {
                match kind {
                    $(#[cfg(feature = $kind)] $kind => Some(crate::config::keys_of::<<crate::$module::$Source as Kind>::Block>()),)*
                    _ => None,
                }
            }

            impl SourceConfig {
                pub fn kind(&self) -> &'static str {
                    match *self {
                        $(#[cfg(feature = $kind)] SourceConfig::$Variant(_) => $kind,)*
                    }
                }

                pub fn default_hosts(&self) -> &'static str {
                    match *self {
                        $(#[cfg(feature = $kind)] SourceConfig::$Variant(ref c) => <crate::$module::$Source as Kind>::default_hosts(c),)*
                    }
                }

                pub async fn load(&self, registry: &str) -> Result<RegistrySnapshot, SourceError> {
                    match *self {
                        $(#[cfg(feature = $kind)] SourceConfig::$Variant(ref c) => {
                            <crate::$module::$Source as Kind>::load(registry, c).await.map_err(SourceError::$Variant)
                        })*
                    }
                }

                pub fn watch(
                    &self,
                    registry: &str,
                    tx: mpsc::Sender<SourceEvent>,
                    cancel: CancellationToken,
                ) -> tokio::task::JoinHandle<()> {
                    match *self {
                        $(#[cfg(feature = $kind)] SourceConfig::$Variant(ref c) => {
                            tokio::spawn(<crate::$module::$Source as Kind>::watch(registry, c, tx, cancel))
                        })*
                    }
                }
            }
        }
    };
}
pub(crate) use registries;

pub use crate::dispatch::{KINDS, SourceConfig, SourceError, configure, keys};
