//! The two Consul requests registry-sync makes, typed, with blocking-query parameters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::connections::{Failure, SetupError, Transport};
use super::parse::{self, Parsed};
use super::{ConsulConfig, ConsulError};
use crate::secret::SecretSource;

/// Bounds a request that is not held by the server (the first query, `check`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a path segment may carry unescaped (RFC 3986 unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An answer with the `X-Consul-Index` it came with.
pub(super) struct Answer<T> {
    pub index: u64,
    pub body: T,
}

/// A cheap handle: clones share one connection pool.
#[derive(Clone)]
pub(super) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: Transport,
    registry: String,
    base: String,
    token: Option<SecretSource>,
    params: Vec<(&'static str, String)>,
    filter: parse::Filter,
    requests: crate::requests::Requests,
}

impl Client {
    pub(super) fn new(registry: &str, config: &ConsulConfig) -> Result<Client, ConsulError> {
        // Blocking queries set their own, longer timeout per request.
        let http = Transport::new(config.max_connections, config.ca_file.as_deref(), CONNECT_TIMEOUT)
            .map_err(|e| match e {
                SetupError::CaFile(error) => ConsulError::CaFile {
                    registry: registry.to_string(),
                    path: config.ca_file.clone().unwrap_or_default(),
                    error,
                },
                SetupError::Tls(error) => ConsulError::Unreachable {
                    registry: registry.to_string(),
                    address: config.address.clone(),
                    action: "setting up the HTTP client".into(),
                    error,
                },
            })?;
        let mut params = Vec::new();
        for (key, value) in [
            ("dc", &config.datacenter),
            ("ns", &config.namespace),
            ("partition", &config.partition),
        ] {
            if let Some(value) = value {
                params.push((key, value.clone()));
            }
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                registry: registry.to_string(),
                base: config.address.trim_end_matches('/').to_string(),
                token: config.token.clone(),
                params,
                filter: parse::Filter {
                    health: config.health.clone(),
                    tags: config.tags.clone(),
                },
                requests: crate::requests::Requests::of(registry),
            }),
        })
    }

    /// `GET /v1/catalog/services`: every service name with the union of its tags.
    pub(super) async fn catalog(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Answer<BTreeMap<String, Vec<String>>>, ConsulError> {
        let action = "the catalog service list";
        let (index, body) = self.get("/v1/catalog/services", action, index, wait).await?;
        let services = parse::catalog(&body).map_err(|error| self.json_error(action, error))?;
        Ok(Answer {
            index,
            body: services,
        })
    }

    /// `GET /v1/health/state/any`: every service check's status, for the services that
    /// have no blocking query of their own.
    pub(super) async fn check_states(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Answer<parse::CheckStates>, ConsulError> {
        let action = "the state of every check";
        let (index, body) = self.get("/v1/health/state/any", action, index, wait).await?;
        let states = parse::check_states(&body).map_err(|error| self.json_error(action, error))?;
        Ok(Answer { index, body: states })
    }

    /// `GET /v1/health/service/<name>`: the service's instances with their checks.
    pub(super) async fn health(
        &self,
        name: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Answer<Parsed>, ConsulError> {
        let action = format!("the health of service {name:?}");
        let path = format!("/v1/health/service/{}", utf8_percent_encode(name, SEGMENT));
        let (index, body) = self.get(&path, &action, index, wait).await?;
        let parsed = parse::health(&self.inner.registry, name, &body, &self.inner.filter)
            .map_err(|error| self.json_error(&action, error))?;
        Ok(Answer { index, body: parsed })
    }

    async fn get(
        &self,
        path: &str,
        action: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, Vec<u8>), ConsulError> {
        let inner = &self.inner;
        let mut query: Vec<(&str, String)> = inner.params.clone();
        let timeout = if index > 0 {
            query.push(("index", index.to_string()));
            query.push(("wait", format!("{}ms", wait.as_millis())));
            // Consul adds up to wait/16 of jitter; the timeout leaves room for it.
            wait + wait / 16 + REQUEST_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        let mut url = format!("{}{path}", inner.base);
        for (n, (key, value)) in query.iter().enumerate() {
            url.push(if n == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            url.extend(utf8_percent_encode(value, SEGMENT));
        }
        let unreachable = |error: String| ConsulError::Unreachable {
            registry: inner.registry.clone(),
            address: inner.base.clone(),
            action: action.to_string(),
            error,
        };
        let url: hyper::http::Uri = url
            .parse()
            .map_err(|_| unreachable("the address is not a valid URL; check `address`".into()))?;
        let mut headers = hyper::http::HeaderMap::new();
        if let Some(source) = &inner.token {
            let token = source.read().map_err(|error| ConsulError::Token {
                registry: inner.registry.clone(),
                error,
            })?;
            let value = super::connections::secret_header(token.expose()).ok_or_else(|| {
                unreachable("the token holds characters an HTTP header cannot; check `token_file` or `token_env`".into())
            })?;
            headers.insert("x-consul-token", value);
        }
        inner.requests.count();
        let response = inner
            .http
            .get(url, headers, timeout, crate::MAX_BODY)
            .await
            .map_err(|failure| match failure {
                Failure::TooLarge(limit) => ConsulError::TooLarge {
                    registry: inner.registry.clone(),
                    address: inner.base.clone(),
                    action: action.to_string(),
                    limit_mib: limit >> 20,
                },
                other => unreachable(other.to_string()),
            })?;
        let status = response.status;
        let index = response
            .headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // A token that lost its read rights still gets `200`, with what it may not see
        // filtered out: an answer that is not the truth, so a failure, never deletions.
        let filtered = response
            .headers
            .get("x-consul-results-filtered-by-acls")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let body = response.body;
        if status.is_success() && filtered {
            return Err(ConsulError::AclFiltered {
                registry: inner.registry.clone(),
                address: inner.base.clone(),
                action: action.to_string(),
            });
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).trim().chars().take(200).collect();
            let (registry, address, action, status) = (
                inner.registry.clone(),
                inner.base.clone(),
                action.to_string(),
                status.as_u16(),
            );
            return Err(match status {
                401 | 403 => ConsulError::Acl {
                    registry,
                    address,
                    action,
                    status,
                    body: text,
                },
                _ => ConsulError::Status {
                    registry,
                    address,
                    action,
                    status,
                    body: text,
                },
            });
        }
        Ok((index, body))
    }

    fn json_error(&self, action: &str, error: String) -> ConsulError {
        ConsulError::Json {
            registry: self.inner.registry.clone(),
            address: self.inner.base.clone(),
            action: action.to_string(),
            error,
        }
    }
}
