//! How fast registry-sync writes to the API server: a client-side token bucket and the
//! decision which failures are worth a retry.
//!
//! The API server protects itself (priority and fairness, 429 with Retry-After, which
//! the transport layer honours); the bucket keeps a cold start of 10,000 objects from
//! provoking that in the first place, and keeps one installation from starving others.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket: `burst` requests at once, then `qps` per second.
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `qps` ≤ 0 disables limiting.
    pub fn new(qps: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits until a request may go out.
    pub async fn acquire(&self) {
        if self.qps <= 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let now = Instant::now();
                let (tokens, last) = *state;
                let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
                if tokens >= 1.0 {
                    *state = (tokens - 1.0, now);
                    return;
                }
                *state = (tokens, now);
                // A tiny `qps` would overflow a Duration; no wait is longer than this.
                Duration::try_from_secs_f64((1.0 - tokens) / self.qps)
                    .map_or(MAX_WAIT, |wait| wait.min(MAX_WAIT))
            };
            tokio::time::sleep(wait).await;
            if wait == MAX_WAIT {
                *self.state.lock().await = (0.0, Instant::now());
                return;
            }
        }
    }
}

/// The longest one request waits for a token, whatever `qps` says.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether a failed request may succeed when sent again: throttling, server errors,
/// timeouts and broken connections may; a refusal (invalid, forbidden, not found) will
/// not.
pub fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) if lacks_schema_field(status) => false,
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// A server-side apply of a field the installed CRD's schema does not declare (CRDs
/// older than the objects need): the server answers `500`, but the same object is
/// refused every time, so it is a refusal, not a failing server.
pub fn lacks_schema_field(status: &kube::core::Status) -> bool {
    status.code == 500 && status.message.contains("field not declared in schema")
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// What a failed API call says about the API server, as a sink's failure reason.
pub fn unavailability(error: &kube::Error) -> registry_sync_sinks::Unavailability {
    use registry_sync_sinks::Unavailability;
    match status_code(error) {
        Some(401 | 403) => Unavailability::Denied,
        Some(429) => Unavailability::Throttled,
        Some(_) => Unavailability::Refused,
        None => Unavailability::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure(message, "").with_code(code)))
    }

    #[test]
    fn a_field_the_crd_lacks_is_a_refusal_while_other_server_errors_are_retried() {
        let undeclared = api_error(
            500,
            "failed to create typed patch object (/a; networking.istio.io/v1, Kind=ServiceEntry): .spec.endpoints[0].foo: field not declared in schema",
        );
        assert!(!is_retryable(&undeclared));
        assert!(is_retryable(&api_error(500, "etcdserver: request timed out")));
        assert!(is_retryable(&api_error(429, "too many requests")));
        assert!(!is_retryable(&api_error(422, "invalid")));
    }

    #[test]
    fn a_failed_call_names_why_the_sink_is_unavailable() {
        use registry_sync_sinks::Unavailability;
        assert_eq!(
            unavailability(&api_error(403, "forbidden")),
            Unavailability::Denied
        );
        assert_eq!(
            unavailability(&api_error(401, "unauthorized")),
            Unavailability::Denied
        );
        assert_eq!(
            unavailability(&api_error(429, "too many requests")),
            Unavailability::Throttled
        );
        assert_eq!(
            unavailability(&api_error(500, "etcd timed out")),
            Unavailability::Refused
        );
        assert_eq!(
            unavailability(&kube::Error::LinesCodecMaxLineLengthExceeded),
            Unavailability::Unreachable
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tiny_rate_waits_at_most_a_minute_instead_of_overflowing() {
        let limiter = RateLimiter::new(1e-300, 1);
        limiter.acquire().await;
        let start = tokio::time::Instant::now();
        limiter.acquire().await;
        assert!(start.elapsed() <= MAX_WAIT + Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_paces_at_qps() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst goes out at once"
        );
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(990) && elapsed <= Duration::from_millis(1100),
            "ten more at 10 qps take a second, took {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_qps_limiter_never_waits() {
        let limiter = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
