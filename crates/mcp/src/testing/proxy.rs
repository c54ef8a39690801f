//! A sidecar proxy's view of istiod, for tests that follow a registry's instances all
//! the way to what an Envoy receives: it opens an ADS stream on istiod's plaintext xDS
//! port as a sidecar does, asks for every cluster (CDS) and for the endpoints of the
//! EDS ones, ACKs every response, and keeps what it was sent.
//!
//! Only the fields the tests read are declared (field numbers of the public envoy API):
//! a cluster's name, discovery type and inline endpoints, and each endpoint's address,
//! port, health, weight and locality.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use crate::proto::{DiscoveryRequest, DiscoveryResponse, Node};

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// `envoy.config.cluster.v3.Cluster`, in part.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cluster {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `DiscoveryType`: STATIC 0, STRICT_DNS 1, LOGICAL_DNS 2, EDS 3, ORIGINAL_DST 4.
    #[prost(int32, tag = "2")]
    pub r#type: i32,
    #[prost(message, optional, tag = "33")]
    pub load_assignment: Option<ClusterLoadAssignment>,
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`, in part.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterLoadAssignment {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
    #[prost(message, repeated, tag = "2")]
    pub endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalityLbEndpoints {
    #[prost(message, optional, tag = "1")]
    pub locality: Option<Locality>,
    #[prost(message, repeated, tag = "2")]
    pub lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Locality {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub zone: String,
    #[prost(string, tag = "3")]
    pub sub_zone: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LbEndpoint {
    #[prost(message, optional, tag = "1")]
    pub endpoint: Option<Endpoint>,
    /// `HealthStatus`: UNKNOWN 0, HEALTHY 1, UNHEALTHY 2, DRAINING 3, TIMEOUT 4, DEGRADED 5.
    #[prost(int32, tag = "2")]
    pub health_status: i32,
    #[prost(message, optional, tag = "4")]
    pub load_balancing_weight: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Endpoint {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

/// One endpoint as a proxy is told about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub address: String,
    pub port: u32,
    /// `HealthStatus` as istiod sets it: 1 healthy, 2 unhealthy, 3 draining, 0 unknown.
    pub health: i32,
    pub weight: Option<u32>,
    /// `region/zone/subzone`, empty parts left empty.
    pub locality: String,
}

/// A sidecar's ADS stream to istiod.
pub struct Proxy {
    node: Node,
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
    /// Every cluster by name, as the last CDS response listed them.
    pub clusters: BTreeMap<String, Cluster>,
    /// The endpoints of each EDS cluster.
    pub assignments: BTreeMap<String, ClusterLoadAssignment>,
    /// EDS responses so far.
    pub eds_responses: usize,
    eds_names: Vec<String>,
}

impl Proxy {
    /// Connects to istiod's plaintext xDS `address` as the sidecar `node_id`
    /// (`sidecar~IP~POD.NS~NS.svc.cluster.local`) and asks for every cluster.
    pub async fn connect(address: std::net::SocketAddr, node_id: &str) -> Result<Proxy, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(i32::MAX as usize);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let namespace = node_id
            .split('~')
            .nth(2)
            .and_then(|p| p.split('.').nth(1))
            .unwrap_or("default");
        let metadata = prost_types::Struct {
            fields: [
                ("NAMESPACE", namespace),
                ("ISTIO_VERSION", "1.31.0"),
                ("CLUSTER_ID", "Kubernetes"),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
        };
        let node = Node {
            id: node_id.to_string(),
            metadata: Some(metadata),
            ..Default::default()
        };
        let (requests, rx) = mpsc::channel(64);
        requests
            .send(DiscoveryRequest {
                node: Some(node.clone()),
                type_url: CLUSTER_TYPE.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|_| "request queue closed".to_string())?;
        let path = http::uri::PathAndQuery::from_static(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        );
        let codec = tonic_prost::ProstCodec::<DiscoveryRequest, DiscoveryResponse>::default();
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let responses = grpc
            .streaming(tonic::Request::new(stream), path, codec)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        Ok(Proxy {
            node,
            requests,
            responses,
            clusters: BTreeMap::new(),
            assignments: BTreeMap::new(),
            eds_responses: 0,
            eds_names: Vec::new(),
        })
    }

    /// Handles the next response within `timeout`; false when none came or the stream
    /// ended.
    pub async fn next(&mut self, timeout: Duration) -> bool {
        let Ok(Ok(Some(response))) = tokio::time::timeout(timeout, self.responses.message()).await else {
            return false;
        };
        let mut ask_eds = false;
        match response.type_url.as_str() {
            CLUSTER_TYPE => {
                self.clusters = response
                    .resources
                    .iter()
                    .filter_map(|any| Cluster::decode(any.value.as_slice()).ok())
                    .map(|c| (c.name.clone(), c))
                    .collect();
                let eds: Vec<String> = self
                    .clusters
                    .values()
                    .filter(|c| c.r#type == 3)
                    .map(|c| c.name.clone())
                    .collect();
                self.assignments.retain(|name, _| eds.contains(name));
                if eds != self.eds_names {
                    self.eds_names = eds;
                    ask_eds = true;
                }
            }
            ENDPOINT_TYPE => {
                self.eds_responses += 1;
                for any in &response.resources {
                    if let Ok(assignment) = ClusterLoadAssignment::decode(any.value.as_slice()) {
                        self.assignments
                            .insert(assignment.cluster_name.clone(), assignment);
                    }
                }
            }
            _ => {}
        }
        let ack = DiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            resource_names: if response.type_url == ENDPOINT_TYPE {
                self.eds_names.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        // Bounded like the read: a stream that stopped taking requests ends the wait
        // instead of holding the caller for ever.
        if !matches!(
            tokio::time::timeout(timeout, self.requests.send(ack)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        if ask_eds {
            let request = DiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: ENDPOINT_TYPE.to_string(),
                resource_names: self.eds_names.clone(),
                ..Default::default()
            };
            if !matches!(
                tokio::time::timeout(timeout, self.requests.send(request)).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
        true
    }

    /// Reads responses until `condition` holds or `limit` passes; whether it held.
    pub async fn until(&mut self, limit: Duration, condition: impl Fn(&Proxy) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !condition(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.next(left).await && tokio::time::Instant::now() >= deadline {
                return condition(self);
            }
        }
        true
    }

    /// The outbound cluster of `host` on `port`, as istiod names it.
    pub fn cluster_name(host: &str, port: u16) -> String {
        format!("outbound|{port}||{host}")
    }

    /// What the proxy was told about the endpoints of `cluster` (EDS or inline), sorted.
    pub fn endpoints(&self, cluster: &str) -> Vec<Seen> {
        let assignment = self.assignments.get(cluster).or_else(|| {
            self.clusters
                .get(cluster)
                .and_then(|c| c.load_assignment.as_ref())
        });
        let mut seen: Vec<Seen> = assignment
            .into_iter()
            .flat_map(|a| &a.endpoints)
            .flat_map(|group| {
                let locality = group
                    .locality
                    .as_ref()
                    .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
                    .unwrap_or_default();
                group.lb_endpoints.iter().filter_map(move |lb| {
                    let socket = lb.endpoint.as_ref()?.address.as_ref()?.socket_address.as_ref()?;
                    Some(Seen {
                        address: socket.address.clone(),
                        port: socket.port_value,
                        health: lb.health_status,
                        weight: lb.load_balancing_weight,
                        locality: locality.clone(),
                    })
                })
            })
            .collect();
        seen.sort();
        seen
    }
}
