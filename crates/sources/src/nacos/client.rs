//! The requests the source makes: through nacos-sdk over gRPC (service lists per group,
//! instance reads, subscriptions), and over HTTP for the login and the catalog of every
//! group. Every request is bounded by [`REQUEST_TIMEOUT`], since the SDK may hold a
//! request until it has reconnected.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nacos_sdk::api::naming::{NamingEventListener, NamingService, NamingServiceBuilder, ServiceInstance};
use nacos_sdk::api::plugin::{AuthContext, AuthPlugin, LoginIdentityContext, RequestResource};
use nacos_sdk::api::props::ClientProps;

use super::paging::{self, Pages, Progress};
use super::parse::{self, ServiceName};
use super::{NacosConfig, NacosError, PAGE_SIZE, REQUEST_TIMEOUT};
use crate::requests::Requests;
use crate::secret::Credentials;

/// A connected client of one Nacos namespace. Cheap to clone.
#[derive(Clone)]
pub(super) struct Client {
    registry: Arc<str>,
    config: Arc<NacosConfig>,
    naming: NamingService,
    http: reqwest::Client,
    login: Option<Arc<Login>>,
    requests: Requests,
}

impl Client {
    /// Logs in (with credentials) and opens the gRPC connection.
    pub(super) fn registry(&self) -> &str {
        &self.registry
    }

    pub(super) async fn connect(registry: &str, config: &NacosConfig) -> Result<Client, NacosError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| NacosError::Connect {
                registry: registry.to_string(),
                address: config.addresses.join(","),
                error: describe(e),
            })?;
        // The login and the SDK's calls are requests to the same registry.
        let requests = Requests::of(registry);
        let login = config.credentials.as_ref().map(|credentials| {
            Arc::new(Login {
                registry: registry.to_string(),
                addresses: config.addresses.clone(),
                credentials: credentials.clone(),
                http: http.clone(),
                token: RwLock::new(None),
                requests: requests.clone(),
            })
        });
        if let Some(login) = &login {
            login.refresh().await?;
        }
        // The SDK writes what it learns to disk; it is never read back (no cache at
        // start), so one scratch directory per registry name keeps it out of the home
        // directory without leaving a new one behind at every start.
        let cache_dir = std::env::temp_dir()
            .join("registry-sync-nacos-cache")
            .join(registry);
        let props = ClientProps::new()
            .server_addr(config.addresses.join(","))
            .namespace(config.namespace_id.clone())
            .app_name("registry-sync")
            .env_first(false)
            .naming_push_empty_protection(false)
            .naming_load_cache_at_start(false)
            .cache_dir(cache_dir);
        let mut builder = NamingServiceBuilder::new(props);
        if let Some(login) = &login {
            builder = builder.with_auth_plugin(Arc::new(LoginPlugin(Arc::clone(login))));
        }
        let connect_error = |error: String| NacosError::Connect {
            registry: registry.to_string(),
            address: config.addresses.join(","),
            error,
        };
        let naming = tokio::time::timeout(REQUEST_TIMEOUT, builder.build())
            .await
            .map_err(|_| connect_error(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Client {
            registry: registry.into(),
            config: Arc::new(config.clone()),
            naming,
            http,
            login,
            requests,
        })
    }

    fn address(&self) -> String {
        self.config.addresses.join(",")
    }

    /// Runs one SDK request with the timeout, naming `action` in the error.
    async fn timed<T>(
        &self,
        action: impl Fn() -> String,
        request: impl Future<Output = nacos_sdk::api::error::Result<T>>,
    ) -> Result<T, NacosError> {
        self.requests.count();
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Err(_) => Err(NacosError::Timeout {
                registry: self.registry.to_string(),
                address: self.address(),
                action: action(),
            }),
            Ok(Err(error)) => Err(NacosError::Request {
                registry: self.registry.to_string(),
                address: self.address(),
                action: action(),
                error: error.to_string(),
            }),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Every selected service of the namespace.
    pub(super) async fn services(&self) -> Result<BTreeSet<ServiceName>, NacosError> {
        let listed = if self.config.groups.is_empty() {
            self.catalog().await?
        } else {
            let mut listed = Vec::new();
            for group in &self.config.groups {
                listed.extend(self.group_services(group).await?);
            }
            listed
        };
        Ok(listed.into_iter().filter(|s| self.config.selects(s)).collect())
    }

    /// One group's services, a page at a time (`ServiceListRequest`), as one consistent
    /// view (see [`paging`]).
    async fn group_services(&self, group: &str) -> Result<Vec<ServiceName>, NacosError> {
        for _ in 0..paging::ATTEMPTS {
            let mut pages = Pages::new();
            let progress = loop {
                let page = pages.pages() as i32 + 1;
                let action = || format!("the service list of group {group:?} (page {page})");
                let (names, count) = self
                    .timed(
                        action,
                        self.naming
                            .get_service_list(page, PAGE_SIZE, Some(group.to_string())),
                    )
                    .await?;
                let full = names.len() >= PAGE_SIZE as usize;
                let total = u64::try_from(count).unwrap_or(0);
                match pages.add(total, names.iter().map(|n| ServiceName::parse(group, n)), full) {
                    Progress::More => continue,
                    done => break done,
                }
            };
            if progress == Progress::Complete {
                return Ok(pages.into_items());
            }
        }
        Err(self.moving_listing(&format!("the service list of group {group:?}")))
    }

    fn moving_listing(&self, what: &str) -> NacosError {
        NacosError::Request {
            registry: self.registry.to_string(),
            address: self.config.addresses.join(","),
            action: what.to_string(),
            error: format!(
                "the list changed while it was read page by page, {} times in a row; the last known services are kept and the list is read again next round",
                paging::ATTEMPTS
            ),
        }
    }

    /// Every group's services from the HTTP catalog, a page at a time, from the first
    /// address that answers.
    async fn catalog(&self) -> Result<Vec<ServiceName>, NacosError> {
        let mut last_error = None;
        for address in &self.config.addresses {
            match self.catalog_from(address).await {
                Ok(services) => return Ok(services),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| NacosError::Connect {
            registry: self.registry.to_string(),
            address: String::new(),
            error: "no address is configured".into(),
        }))
    }

    async fn catalog_from(&self, address: &str) -> Result<Vec<ServiceName>, NacosError> {
        for _ in 0..paging::ATTEMPTS {
            if let Some(services) = self.catalog_pages(address).await? {
                return Ok(services);
            }
        }
        Err(self.moving_listing("GET /nacos/v1/ns/catalog/services"))
    }

    /// One read of the whole catalog; `None` when it moved while being read.
    async fn catalog_pages(&self, address: &str) -> Result<Option<Vec<ServiceName>>, NacosError> {
        let mut pages = Pages::new();
        let url = format!("http://{address}/nacos/v1/ns/catalog/services");
        for page in 1u64.. {
            let action = format!("GET /nacos/v1/ns/catalog/services (page {page})");
            let failed = |error: String| NacosError::Request {
                registry: self.registry.to_string(),
                address: address.to_string(),
                action: action.clone(),
                error,
            };
            let mut query = vec![
                ("withInstances", "false".to_string()),
                ("pageNo", page.to_string()),
                ("pageSize", PAGE_SIZE.to_string()),
                ("namespaceId", self.config.namespace_id.clone()),
            ];
            if let Some(login) = &self.login {
                query.push(("accessToken", login.token().await?));
            }
            self.requests.count();
            let response = self.http.get(&url).query(&query).send().await.map_err(|e| {
                if e.is_timeout() {
                    NacosError::Timeout {
                        registry: self.registry.to_string(),
                        address: address.to_string(),
                        action: action.clone(),
                    }
                } else {
                    failed(describe(e))
                }
            })?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| failed(describe(e)))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                return Err(failed(format!("HTTP {status}: {text}")));
            }
            let (count, page_services) = parse::catalog_page(&body).map_err(failed)?;
            let full = page_services.len() >= PAGE_SIZE as usize;
            match pages.add(count, page_services, full) {
                Progress::More => {}
                Progress::Complete => return Ok(Some(pages.into_items())),
                Progress::Moved => return Ok(None),
            }
        }
        Ok(None)
    }

    /// All instances of a service, healthy or not, straight from the server (never the
    /// SDK's cache).
    pub(super) async fn instances(&self, service: &ServiceName) -> Result<Vec<ServiceInstance>, NacosError> {
        self.timed(
            || format!("the instances of {}", service.key()),
            self.naming.get_all_instances(
                service.name.clone(),
                Some(service.group.clone()),
                Vec::new(),
                false,
            ),
        )
        .await
    }

    /// Subscribes `listener` to a service's pushes. The SDK reports no error here (it
    /// retries the subscription in the background); the read that follows does.
    pub(super) async fn subscribe(
        &self,
        service: &ServiceName,
        listener: Arc<dyn NamingEventListener>,
    ) -> Result<(), NacosError> {
        self.timed(
            || format!("the subscription to {}", service.key()),
            self.naming.subscribe(
                service.name.clone(),
                Some(service.group.clone()),
                Vec::new(),
                listener,
            ),
        )
        .await
    }

    /// Ends a subscription, which also stops the SDK's periodic re-read of it.
    pub(super) async fn unsubscribe(
        &self,
        service: &ServiceName,
        listener: Arc<dyn NamingEventListener>,
    ) -> Result<(), NacosError> {
        self.timed(
            || format!("ending the subscription to {}", service.key()),
            self.naming.unsubscribe(
                service.name.clone(),
                Some(service.group.clone()),
                Vec::new(),
                listener,
            ),
        )
        .await
    }
}

/// A reqwest error with its causes ("error sending request: … Connection refused"),
/// without the URL, which may carry the access token.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The access token of a user, renewed at half its lifetime.
struct Login {
    registry: String,
    addresses: Vec<String>,
    credentials: Credentials,
    http: reqwest::Client,
    token: RwLock<Option<Token>>,
    requests: Requests,
}

struct Token {
    value: String,
    renew_at: Instant,
}

impl Login {
    /// The current token, logging in first when it is due.
    async fn token(&self) -> Result<String, NacosError> {
        if let Some(token) = self.current(Instant::now()) {
            return Ok(token);
        }
        self.refresh().await
    }

    fn current(&self, now: Instant) -> Option<String> {
        let guard = self.token.read().ok()?;
        guard
            .as_ref()
            .filter(|t| t.renew_at > now)
            .map(|t| t.value.clone())
    }

    /// Logs in at the first address that answers.
    async fn refresh(&self) -> Result<String, NacosError> {
        let password = self
            .credentials
            .password
            .read()
            .map_err(|error| NacosError::Password {
                registry: self.registry.clone(),
                error,
            })?;
        let mut last_error = None;
        for address in &self.addresses {
            let failed = |error: String| NacosError::Login {
                registry: self.registry.clone(),
                address: address.clone(),
                username: self.credentials.username.clone(),
                error,
            };
            let form = [
                ("username", self.credentials.username.as_str()),
                ("password", password.expose()),
            ];
            self.requests.count();
            let answer = self
                .http
                .post(format!("http://{address}/nacos/v1/auth/login"))
                .form(&form)
                .send()
                .await;
            let response = match answer {
                Ok(response) => response,
                Err(e) => {
                    last_error = Some(NacosError::Connect {
                        registry: self.registry.clone(),
                        address: address.clone(),
                        error: format!("login: {}", describe(e)),
                    });
                    continue;
                }
            };
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                return Err(failed(format!("HTTP {status}: {text}")));
            }
            let (value, ttl) = parse::login_answer(&body).map_err(failed)?;
            let renew_at = Instant::now() + Duration::from_secs(ttl / 2);
            if let Ok(mut guard) = self.token.write() {
                *guard = Some(Token {
                    value: value.clone(),
                    renew_at,
                });
            }
            return Ok(value);
        }
        Err(last_error.unwrap_or_else(|| NacosError::Connect {
            registry: self.registry.clone(),
            address: String::new(),
            error: "no address is configured".into(),
        }))
    }
}

/// Hands the SDK the token of [`Login`] for its gRPC requests; the SDK calls `login`
/// every 30 s, which renews the token when due.
struct LoginPlugin(Arc<Login>);

impl AuthPlugin for LoginPlugin {
    // The shape `async_trait` gives the trait's async method.
    fn login<'life0, 'async_trait>(
        &'life0 self,
        _server_list: Arc<Vec<String>>,
        _auth_context: Arc<AuthContext>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let Err(error) = self.0.token().await {
                // The next request fails and reports it; this says why.
                tracing::warn!("{error}");
            }
        })
    }

    fn get_login_identity(&self, _resource: RequestResource) -> LoginIdentityContext {
        match self.0.current(Instant::now()).or_else(|| {
            // Expired but not yet renewed: the old token is still the best guess.
            let guard = self.0.token.read().ok()?;
            guard.as_ref().map(|t| t.value.clone())
        }) {
            Some(token) => LoginIdentityContext::default().add_context("accessToken", token),
            None => LoginIdentityContext::default(),
        }
    }
}
