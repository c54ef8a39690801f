//! Following Eureka: a full fetch, then deltas checked against the reconcile hash.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parse::{self, Applications};
use super::{CONNECT_TIMEOUT, EurekaConfig, EurekaError, EurekaSource, REQUEST_TIMEOUT};
use crate::SourceEvent;
use crate::emit::{Backoff, Emitter, Stopped};
use crate::state::{Item, Services};

pub(super) struct Client {
    http: reqwest::Client,
    registry: String,
    base: String,
    config: EurekaConfig,
    requests: crate::requests::Requests,
}

impl Client {
    pub(super) fn new(registry: &str, config: &EurekaConfig) -> Result<Client, EurekaError> {
        let http = crate::http::client(config.ca_file.as_deref(), CONNECT_TIMEOUT, Some(REQUEST_TIMEOUT))
            .map_err(|e| match e {
                crate::http::ClientError::CaFile(error) => EurekaError::CaFile {
                    registry: registry.to_string(),
                    path: config.ca_file.clone().unwrap_or_default(),
                    error,
                },
                crate::http::ClientError::Build(error) => EurekaError::Unreachable {
                    registry: registry.to_string(),
                    address: config.address.clone(),
                    action: "setting up the HTTP client".into(),
                    error,
                },
            })?;
        Ok(Client {
            http,
            registry: registry.to_string(),
            base: config.address.trim_end_matches('/').to_string(),
            config: config.clone(),
            requests: crate::requests::Requests::of(registry),
        })
    }

    /// `GET {address}{path}` as JSON, parsed.
    pub(super) async fn fetch(&self, path: &str, action: &str) -> Result<Applications, EurekaError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Accept", "application/json");
        if let Some(credentials) = &self.config.credentials {
            let password = credentials
                .password
                .read()
                .map_err(|error| EurekaError::Password {
                    registry: self.registry.clone(),
                    error,
                })?;
            request = request.basic_auth(&credentials.username, Some(password.expose()));
        }
        let unreachable = |error: reqwest::Error| EurekaError::Unreachable {
            registry: self.registry.clone(),
            address: self.base.clone(),
            action: action.to_string(),
            error: error.without_url().to_string(),
        };
        self.requests.count();
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = crate::http::body(response, crate::MAX_BODY)
            .await
            .map_err(|error| match error {
                crate::http::BodyError::Read(error) => unreachable(error),
                crate::http::BodyError::TooLarge(limit) => EurekaError::TooLarge {
                    registry: self.registry.clone(),
                    address: self.base.clone(),
                    action: action.to_string(),
                    limit_mib: limit >> 20,
                },
            })?;
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => "; check `username` and `password_file` / `password_env`",
                404 => "; check that `address` is the service URL, usually ending in /eureka",
                _ => "",
            };
            return Err(EurekaError::Status {
                registry: self.registry.clone(),
                address: self.base.clone(),
                action: action.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().chars().take(200).collect(),
                hint,
            });
        }
        parse::applications(&self.registry, &body, &self.config).map_err(|error| EurekaError::Json {
            registry: self.registry.clone(),
            address: self.base.clone(),
            action: action.to_string(),
            error,
        })
    }
}

/// The local copy: every instance's status (for the hash) and the state (for snapshots).
struct Local {
    statuses: BTreeMap<(String, String), String>,
    state: Services,
}

impl Local {
    fn replace(&mut self, full: Applications) {
        self.statuses.clear();
        let mut listing: BTreeMap<String, BTreeMap<String, Item>> = BTreeMap::new();
        for entry in full.instances {
            self.statuses
                .insert((entry.app.clone(), entry.id.clone()), entry.status);
            listing.entry(entry.app).or_default().insert(entry.id, entry.item);
        }
        self.state.replace_all(listing, BTreeMap::new());
    }

    /// Applies a delta; returns whether the hash still agrees with the server's.
    fn apply(&mut self, delta: Applications) -> bool {
        for entry in delta.instances {
            let key = (entry.app.clone(), entry.id.clone());
            match entry.action.as_str() {
                "DELETED" => {
                    self.statuses.remove(&key);
                    self.state.remove(&entry.app, &entry.id, true);
                }
                _ => {
                    self.statuses.insert(key, entry.status);
                    self.state.put(&entry.app, &entry.id, entry.item);
                }
            }
        }
        let local = parse::hashcode(self.statuses.values().map(String::as_str));
        delta.hashcode.is_none_or(|remote| remote == local)
    }
}

pub(super) async fn run(source: EurekaSource, tx: mpsc::Sender<SourceEvent>, cancel: CancellationToken) {
    let mut emitter = Emitter::new(&source.registry, tx, cancel);
    let _ = follow(&source, &mut emitter).await;
}

async fn follow(source: &EurekaSource, emitter: &mut Emitter) -> Result<(), Stopped> {
    let client = match Client::new(&source.registry, &source.config) {
        Ok(client) => client,
        Err(error) => {
            // A bad CA file does not heal by retrying.
            emitter.failed(crate::SourceFailure::of(&error)).await?;
            emitter.cancel().cancelled().await;
            return Err(Stopped);
        }
    };
    let mut local = Local {
        statuses: BTreeMap::new(),
        state: Services::new(&source.registry),
    };
    let mut backoff = Backoff::new();
    let mut full_needed = true;
    loop {
        let result = if full_needed {
            client.fetch("/apps", "the full registry").await.map(|full| {
                local.replace(full);
                true
            })
        } else {
            client
                .fetch("/apps/delta", "the delta")
                .await
                .map(|delta| local.apply(delta))
        };
        match result {
            Ok(agrees) => {
                backoff.reset();
                full_needed = !agrees;
                if agrees {
                    emitter.snapshot(&mut local.state).await?;
                    emitter.sleep(source.config.refresh).await?;
                } else {
                    tracing::info!(
                        registry = %source.registry,
                        "the delta's apps__hashcode differs from the local copy's; fetching the full registry"
                    );
                }
            }
            Err(error) => {
                full_needed = true;
                emitter.failed(crate::SourceFailure::of(&error)).await?;
                emitter.sleep(backoff.next_delay()).await?;
            }
        }
    }
}
