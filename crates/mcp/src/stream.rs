//! One istiod stream as a state machine, with no I/O: which types it subscribed to,
//! what it was last sent and what it acknowledged. The server feeds it requests and
//! changes of the served set, and sends what it says.
//!
//! istiod's client (`pkg/adsc`) sends one request per type at the start of a stream,
//! each carrying a nonce that is a time string this server never sent; the Node only
//! on the first; then an ACK (the nonce echoed) after every response, and never a NACK.
//! So: a request whose nonce this stream did not send last for its type subscribes
//! (and is answered), the nonce it did send last is an ACK (answered by nothing), and
//! an older nonce of ours is stale (ignored).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use registry_sync_istio::Kind;

use crate::convert::served_kind;
use crate::proto::{DiscoveryRequest, Node};

/// What a stream answers for one requested type URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One of ours, with the served set of that kind.
    Entries(Kind),
    /// Anything else istiod asks for (its other Pilot types, the mesh config, a type a
    /// newer istiod adds): an empty list, without which istiod never becomes ready.
    Empty,
}

impl Answer {
    pub fn of(type_url: &str) -> Answer {
        match served_kind(type_url) {
            Some(kind) => Answer::Entries(kind),
            None => Answer::Empty,
        }
    }
}

/// What the stream should do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send the current set for this type URL (held back while the entries are not
    /// ready, see [`StreamState::respond_now`]).
    Respond(String),
    /// An ACK of the last response: nothing to send. `after` is how long it took.
    Acked {
        type_url: String,
        version: String,
        after: Duration,
    },
    /// A stale nonce, or a request that needs nothing: nothing to send.
    Nothing,
    /// A request past this stream's limits (too many type URLs, a type URL too long):
    /// the stream ends with this reason.
    Refuse(String),
}

/// Distinct type URLs one stream may subscribe to: istiod asks for about twenty.
pub const MAX_TYPES: usize = 64;
/// The longest type URL taken.
pub const MAX_TYPE_URL: usize = 256;

#[derive(Debug, Default)]
struct TypeState {
    /// Nonce and version of the last response sent for this type.
    sent: Option<(String, String, Instant)>,
    /// Version the client acknowledged last.
    acked: Option<String>,
}

/// The state of one stream.
#[derive(Debug)]
pub struct StreamState {
    /// Unique per server process and stream, so nonces never repeat across streams.
    id: String,
    node: Option<Node>,
    types: BTreeMap<String, TypeState>,
    sent: u64,
}

impl StreamState {
    pub fn new(id: String) -> StreamState {
        StreamState {
            id,
            node: None,
            types: BTreeMap::new(),
            sent: 0,
        }
    }

    /// The client's node id, from the first request that carried one.
    pub fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }

    pub fn request(&mut self, request: DiscoveryRequest, now: Instant) -> Next {
        if self.node.is_none() {
            self.node = request.node.clone();
        }
        if request.type_url.len() > MAX_TYPE_URL {
            return Next::Refuse(format!("a type URL longer than {MAX_TYPE_URL} bytes"));
        }
        if !self.types.contains_key(&request.type_url) && self.types.len() >= MAX_TYPES {
            return Next::Refuse(format!("more than {MAX_TYPES} type URLs on one stream"));
        }
        let ours = self.is_ours(&request.response_nonce);
        let state = self.types.entry(request.type_url.clone()).or_default();
        match &state.sent {
            Some((nonce, version, at)) if *nonce == request.response_nonce => {
                let after = now.saturating_duration_since(*at);
                let version = version.clone();
                state.acked = Some(version.clone());
                Next::Acked {
                    type_url: request.type_url,
                    version,
                    after,
                }
            }
            // An ACK of an earlier response, overtaken by a newer one on its way.
            Some(_) if ours => Next::Nothing,
            // A nonce this stream never sent: istiod's time-string nonces at the start
            // of a stream, or a client resubscribing. Answered, never taken for an ACK.
            _ => Next::Respond(request.type_url),
        }
    }

    fn is_ours(&self, nonce: &str) -> bool {
        nonce
            .strip_prefix(self.id.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 1 && n <= self.sent))
    }

    /// The type URLs this stream subscribed to, with what it was sent last.
    pub fn subscribed(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.types
            .iter()
            .map(|(url, s)| (url.as_str(), s.sent.as_ref().map(|(_, v, _)| v.as_str())))
    }

    /// Records a response about to be sent; returns its nonce.
    pub fn sending(&mut self, type_url: &str, version: &str, now: Instant) -> String {
        self.sent += 1;
        let nonce = format!("{}-{}", self.id, self.sent);
        let state = self.types.entry(type_url.to_string()).or_default();
        state.sent = Some((nonce.clone(), version.to_string(), now));
        nonce
    }

    /// When the last response for `type_url` was sent, if it is not acknowledged yet.
    pub fn unacked_since(&self, type_url: &str) -> Option<Instant> {
        let state = self.types.get(type_url)?;
        let (_, version, at) = state.sent.as_ref()?;
        (state.acked.as_deref() != Some(version.as_str())).then_some(*at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(type_url: &str, nonce: &str, version: &str, node: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            version_info: version.into(),
            node: node.map(|id| Node {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const SE: &str = "networking.istio.io/v1/ServiceEntry";

    #[test]
    fn istiods_time_string_nonces_subscribe_and_the_echo_of_ours_is_an_ack() {
        let now = Instant::now();
        let mut stream = StreamState::new("s1".into());
        let first = request(
            "core/v1alpha1/MeshConfig",
            "2026-08-22 15:00:18.123456789 +0000 UTC m=+0.512345678",
            "",
            Some("sidecar~10.0.0.1~istiod-1.istio-system~istio-system.svc.cluster.local"),
        );
        assert_eq!(
            stream.request(first, now),
            Next::Respond("core/v1alpha1/MeshConfig".into())
        );
        let subscribe = request(SE, "2026-08-22 15:00:18.2 +0000 UTC m=+0.6", "", None);
        assert_eq!(stream.request(subscribe, now), Next::Respond(SE.into()));
        assert_eq!(
            stream.node_id(),
            Some("sidecar~10.0.0.1~istiod-1.istio-system~istio-system.svc.cluster.local"),
            "the node comes from the first request only"
        );

        let nonce = stream.sending(SE, "v1", now);
        assert!(!nonce.is_empty());
        assert_eq!(stream.unacked_since(SE), Some(now));
        let later = now + Duration::from_millis(3);
        let ack = request(SE, &nonce, "v1", Some("sidecar~x"));
        assert_eq!(
            stream.request(ack, later),
            Next::Acked {
                type_url: SE.into(),
                version: "v1".into(),
                after: Duration::from_millis(3)
            }
        );
        assert_eq!(stream.unacked_since(SE), None);
        assert_eq!(
            stream.node_id().map(|id| id.starts_with("sidecar~10.0.0.1")),
            Some(true)
        );
    }

    #[test]
    fn an_ack_overtaken_by_a_newer_response_is_stale_and_a_foreign_nonce_resubscribes() {
        let now = Instant::now();
        let mut stream = StreamState::new("s7".into());
        stream.request(request(SE, "junk", "", Some("n")), now);
        let first = stream.sending(SE, "v1", now);
        let second = stream.sending(SE, "v2", now);
        assert_ne!(first, second, "nonces are unique");
        assert_eq!(
            stream.request(request(SE, &first, "v1", None), now),
            Next::Nothing
        );
        assert_eq!(
            stream.unacked_since(SE),
            Some(now),
            "v2 is still not acknowledged"
        );
        assert_eq!(
            stream.request(request(SE, "s7-99", "", None), now),
            Next::Respond(SE.into()),
            "a nonce of our shape this stream never sent is not ours"
        );
        assert_eq!(
            stream.request(request(SE, "s1-1", "", None), now),
            Next::Respond(SE.into()),
            "another stream's nonce is not ours"
        );
    }

    #[test]
    fn entry_types_of_every_api_version_are_ours_and_everything_else_is_answered_empty() {
        for url in [
            "networking.istio.io/v1alpha3/ServiceEntry",
            "networking.istio.io/v1beta1/ServiceEntry",
            "networking.istio.io/v1/ServiceEntry",
        ] {
            assert_eq!(Answer::of(url), Answer::Entries(Kind::ServiceEntry), "{url}");
        }
        assert_eq!(
            Answer::of("networking.istio.io/v1/WorkloadEntry"),
            Answer::Entries(Kind::WorkloadEntry)
        );
        for url in [
            "core/v1alpha1/MeshConfig",
            "networking.istio.io/v1/WorkloadGroup",
            "extensions.istio.io/v1alpha1/TrafficExtension",
            "networking.istio.io/v2/ServiceEntry",
            "type.googleapis.com/istio.networking.v1alpha3.ServiceEntry",
            "",
        ] {
            assert_eq!(Answer::of(url), Answer::Empty, "{url}");
        }
    }

    #[test]
    fn a_stream_takes_a_bounded_number_of_type_urls_of_bounded_length() {
        let mut state = StreamState::new("p.1".into());
        let now = Instant::now();
        for n in 0..MAX_TYPES {
            let url = format!("type.googleapis.com/t{n}");
            assert!(matches!(
                state.request(request(&url, "", "", None), now),
                Next::Respond(_)
            ));
        }
        // A type already subscribed is still answered; a new one is refused.
        assert!(matches!(
            state.request(request("type.googleapis.com/t0", "", "", None), now),
            Next::Respond(_)
        ));
        assert!(matches!(
            state.request(request("type.googleapis.com/one-too-many", "", "", None), now),
            Next::Refuse(_)
        ));
        let long = "x".repeat(MAX_TYPE_URL + 1);
        assert!(matches!(
            StreamState::new("p.2".into()).request(request(&long, "", "", None), now),
            Next::Refuse(_)
        ));
    }
}
