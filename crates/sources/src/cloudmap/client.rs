//! The AWS SDK client, set up the way this source needs it, and the four calls it makes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_servicediscovery::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_servicediscovery::config::retry::RetryConfig;
use aws_sdk_servicediscovery::config::timeout::TimeoutConfig;
use aws_sdk_servicediscovery::config::{BehaviorVersion, ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::operation::discover_instances::DiscoverInstancesError;
use aws_sdk_servicediscovery::operation::discover_instances_revision::DiscoverInstancesRevisionError;
use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatus, HealthStatusFilter, ServiceFilter, ServiceFilterName,
};

use super::parse::{self, Origin};
use super::{CloudMapConfig, CloudMapError};
use crate::state::Item;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one call; a stalled connection must not hold a whole poll round.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cloud Map returns at most 1000 instances per call, the most a service may have.
const MAX_INSTANCES: i32 = 1000;
/// The most `ListNamespaces` and `ListServices` return per page.
const PAGE: i32 = 100;
/// The host prefix the AWS model puts before the endpoint of the discovery calls.
const DATA_PREFIX: &str = "data-";

/// A namespace as the listing names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Namespace {
    pub id: String,
    pub name: String,
    /// The name the discovery calls take: the namespace's `HttpName`, which for a
    /// DNS namespace may differ from its name.
    pub http_name: String,
}

/// A service of a namespace, as the listing names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServiceRef {
    pub name: String,
    /// The service has Route 53 or custom health checks: health can change without
    /// the instances revision moving.
    pub health_checked: bool,
}

/// A service's healthy instances at one revision.
pub(super) struct Instances {
    pub revision: i64,
    pub items: BTreeMap<String, Item>,
}

#[derive(Clone)]
pub(super) struct Client {
    sdk: aws_sdk_servicediscovery::Client,
    registry: String,
    /// The resolved region.
    region: String,
    /// What errors name as the server: the endpoint, or the region.
    target: String,
}

impl Client {
    /// Resolves the region and credentials chain and builds the client. Credentials
    /// are resolved on first use and refreshed by the SDK; none is ever logged.
    pub(super) async fn new(
        registry: &str,
        config: &CloudMapConfig,
        test_credentials: bool,
    ) -> Result<Client, CloudMapError> {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if test_credentials {
            let fixed =
                aws_sdk_servicediscovery::config::Credentials::new("testing", "testing", None, None, "tests");
            loader = loader.credentials_provider(fixed);
        }
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| CloudMapError::NoRegion {
                registry: registry.to_string(),
            })?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let mut builder = aws_sdk_servicediscovery::config::Builder::from(&shared)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(timeouts)
            .interceptor(CountRequests(crate::requests::Requests::of(registry)));
        let target = match &config.endpoint {
            Some(endpoint) => {
                builder = builder
                    .endpoint_url(endpoint)
                    .interceptor(StripDataPrefix::for_endpoint(endpoint));
                endpoint.clone()
            }
            None => format!("region {region}"),
        };
        Ok(Client {
            sdk: aws_sdk_servicediscovery::Client::from_conf(builder.build()),
            registry: registry.to_string(),
            region,
            target,
        })
    }

    pub(super) fn registry(&self) -> &str {
        &self.registry
    }

    /// Every namespace of the account in the region, all pages.
    pub(super) async fn namespaces(&self) -> Result<Vec<Namespace>, CloudMapError> {
        let mut namespaces = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sdk
                .list_namespaces()
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.error("ListNamespaces", e))?;
            for summary in page.namespaces.unwrap_or_default() {
                let http_name = summary
                    .properties
                    .and_then(|p| p.http_properties)
                    .and_then(|h| h.http_name)
                    .filter(|n| !n.is_empty());
                if let (Some(id), Some(name)) = (summary.id, summary.name) {
                    let http_name = http_name.unwrap_or_else(|| name.clone());
                    namespaces.push(Namespace { id, name, http_name });
                }
            }
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(namespaces);
            }
        }
    }

    /// The services of one namespace, all pages, each name once.
    pub(super) async fn services(&self, namespace: &Namespace) -> Result<Vec<ServiceRef>, CloudMapError> {
        let action = || format!("ListServices of namespace {:?}", namespace.name);
        let filter = ServiceFilter::builder()
            .name(ServiceFilterName::NamespaceId)
            .values(&namespace.id)
            .condition(FilterCondition::Eq)
            .build()
            .map_err(|e| CloudMapError::Failed {
                registry: self.registry.clone(),
                target: self.target.clone(),
                action: action(),
                error: e.to_string(),
            })?;
        let mut services: Vec<ServiceRef> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut token = None;
        loop {
            let page = self
                .sdk
                .list_services()
                .filters(filter.clone())
                .max_results(PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.error(&action(), e))?;
            for summary in page.services.unwrap_or_default() {
                let health_checked =
                    summary.health_check_config.is_some() || summary.health_check_custom_config.is_some();
                if let Some(name) = summary.name.filter(|n| !n.is_empty())
                    && seen.insert(name.clone())
                {
                    services.push(ServiceRef { name, health_checked });
                }
            }
            token = page.next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(services);
            }
        }
    }

    /// The service's instances revision; `None` when the service (or its namespace) is
    /// gone.
    pub(super) async fn revision(
        &self,
        namespace: &Namespace,
        service: &str,
    ) -> Result<Option<i64>, CloudMapError> {
        let answer = self
            .sdk
            .discover_instances_revision()
            .namespace_name(&namespace.http_name)
            .service_name(service)
            .send()
            .await;
        match answer {
            Ok(output) => Ok(Some(output.instances_revision.unwrap_or_default())),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    DiscoverInstancesRevisionError::ServiceNotFound(_)
                        | DiscoverInstancesRevisionError::NamespaceNotFound(_)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(
                &format!("DiscoverInstancesRevision of {}/{service}", namespace.name),
                e,
            )),
        }
    }

    /// The service's healthy instances, each read into an item; `None` when the
    /// service (or its namespace) is gone.
    pub(super) async fn instances(
        &self,
        namespace: &Namespace,
        service: &str,
    ) -> Result<Option<Instances>, CloudMapError> {
        let key = format!("{}/{service}", namespace.name);
        let answer = self
            .sdk
            .discover_instances()
            .namespace_name(&namespace.http_name)
            .service_name(service)
            .health_status(HealthStatusFilter::Healthy)
            .max_results(MAX_INSTANCES)
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    DiscoverInstancesError::ServiceNotFound(_) | DiscoverInstancesError::NamespaceNotFound(_)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.error(&format!("DiscoverInstances of {key}"), e)),
        };
        let origin = Origin {
            registry: &self.registry,
            service: &key,
            region: Some(&self.region),
        };
        let mut items = BTreeMap::new();
        for (n, summary) in output.instances.unwrap_or_default().into_iter().enumerate() {
            let id = summary.instance_id.unwrap_or_else(|| format!("#{n}"));
            let healthy = summary.health_status != Some(HealthStatus::Unhealthy);
            let attributes = summary.attributes.unwrap_or_default();
            let item = parse::instance(&origin, &id, &attributes, healthy);
            items.insert(id, item);
        }
        Ok(Some(Instances {
            revision: output.instances_revision.unwrap_or_default(),
            items,
        }))
    }

    /// Sorts an SDK error into what the operator should check.
    fn error<E>(&self, action: &str, error: E) -> CloudMapError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let code = error.code().unwrap_or_default().to_string();
        let text = match error.message() {
            Some(message) if !code.is_empty() => format!("{code}: {message}"),
            _ => DisplayErrorContext(&error).to_string(),
        };
        let registry = self.registry.clone();
        let target = self.target.clone();
        let action = action.to_string();
        let error = redact(&text);
        let lower = text.to_ascii_lowercase();
        if code.contains("Throttl") || code == "RequestLimitExceeded" || code == "TooManyRequestsException" {
            CloudMapError::Throttled {
                registry,
                target,
                action,
                error,
            }
        } else if code.contains("AccessDenied")
            || code.contains("Unrecognized")
            || code.contains("Signature")
            || code.contains("Token")
            || (code.is_empty() && lower.contains("credentials"))
        {
            CloudMapError::Denied {
                registry,
                target,
                action,
                error,
            }
        } else if code.is_empty() {
            CloudMapError::Unreachable {
                registry,
                target,
                action,
                error,
            }
        } else {
            CloudMapError::Failed {
                registry,
                target,
                action,
                error,
            }
        }
    }
}

/// With an overridden endpoint the AWS model still puts `data-` before the host of
/// `DiscoverInstances` and `DiscoverInstancesRevision` (AWS serves them from
/// `data-servicediscovery.<region>.amazonaws.com`), so a client pointed at
/// `http://127.0.0.1:5000` would dial `data-127.0.0.1`. The SDK has no switch for host
/// prefixes; this puts the endpoint's own host back before the request is signed.
#[derive(Debug)]
pub(crate) struct StripDataPrefix {
    authority: String,
}

impl StripDataPrefix {
    /// For a client whose endpoint is overridden with `endpoint`.
    pub(crate) fn for_endpoint(endpoint: &str) -> StripDataPrefix {
        StripDataPrefix {
            authority: authority(endpoint).to_string(),
        }
    }
}

impl Intercept for StripDataPrefix {
    fn name(&self) -> &'static str {
        "StripDataPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request_mut();
        if let Some(uri) = strip_data_prefix(request.uri(), &self.authority) {
            request.set_uri(uri)?;
        }
        Ok(())
    }
}

/// Counts every attempt the SDK sends, retries included: each is a request AWS
/// answers (and bills).
#[derive(Debug)]
struct CountRequests(crate::requests::Requests);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.count();
        Ok(())
    }
}

/// `host[:port]` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// The URI with `data-` removed from its host, when its authority is exactly `data-`
/// followed by `authority`.
fn strip_data_prefix(uri: &str, authority: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    (host.strip_prefix(DATA_PREFIX)? == authority).then(|| format!("{scheme}://{authority}{path}"))
}

/// An error text as it may be logged: on one line, access key ids (which some AWS
/// errors quote in the string they signed) replaced, and at most 300 characters.
fn redact(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = one_line.as_str();
    let mut out = String::with_capacity(text.len().min(300));
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let candidate = &bytes[i..];
        let is_key = candidate.len() >= 20
            && (candidate.starts_with(b"AKIA") || candidate.starts_with(b"ASIA"))
            && candidate[4..20]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if is_key {
            out.push_str("<access key id>");
            i += 20;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    match out.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &out[..end]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_prefix_is_removed_only_before_the_configured_endpoint() {
        let authority = authority("http://127.0.0.1:5000");
        assert_eq!(authority, "127.0.0.1:5000");
        assert_eq!(
            strip_data_prefix("http://data-127.0.0.1:5000/", authority).as_deref(),
            Some("http://127.0.0.1:5000/")
        );
        assert_eq!(strip_data_prefix("http://127.0.0.1:5000/", authority), None);
        assert_eq!(strip_data_prefix("http://data-10.0.0.1:5000/", authority), None);
        assert_eq!(
            strip_data_prefix(
                "https://data-servicediscovery.us-east-1.amazonaws.com/",
                "example.com"
            ),
            None
        );
    }

    #[test]
    fn access_key_ids_never_reach_an_error_text() {
        let text = "InvalidSignatureException: Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1 and ASIAXXXXXXXXXXXXXXXX";
        let redacted = redact(text);
        assert!(!redacted.contains("AKIAIOSFODNN7EXAMPLE"), "{redacted}");
        assert!(!redacted.contains("ASIAXXXXXXXXXXXXXXXX"), "{redacted}");
        assert!(redacted.starts_with("InvalidSignatureException: Credential=<access key id>/"));
        assert!(redact(&"é".repeat(1000)).chars().count() <= 301);
        assert_eq!(
            redact("no credentials:\n  Environment: unset\n"),
            "no credentials: Environment: unset"
        );
    }
}
