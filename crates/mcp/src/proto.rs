//! The messages of MCP-over-xDS as prost structs. No crate carries Istio's MCP envelope
//! or its networking messages for prost, and the few xDS messages istiod uses are
//! smaller written out than a generated API crate is to build; field numbers are those
//! of the public envoy and istio APIs. Maps are B-tree maps, so that encoding is
//! deterministic and a content hash over the bytes is stable.

use std::collections::BTreeMap;

use prost_types::{Any, Struct, Timestamp};

/// `type_url` of every resource in a response: the MCP envelope.
pub const RESOURCE_TYPE: &str = "type.googleapis.com/istio.mcp.v1alpha1.Resource";
/// Body types: the proto package stays `v1alpha3` whatever API version istiod asks for.
pub const SERVICE_ENTRY_BODY: &str = "type.googleapis.com/istio.networking.v1alpha3.ServiceEntry";
pub const WORKLOAD_ENTRY_BODY: &str = "type.googleapis.com/istio.networking.v1alpha3.WorkloadEntry";

/// `envoy.service.discovery.v3.DiscoveryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryRequest {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, optional, tag = "2")]
    pub node: Option<Node>,
    #[prost(string, repeated, tag = "3")]
    pub resource_names: Vec<String>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<Status>,
}

/// `envoy.service.discovery.v3.DiscoveryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Any>,
    #[prost(bool, tag = "3")]
    pub canary: bool,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(message, optional, tag = "6")]
    pub control_plane: Option<ControlPlane>,
}

/// `envoy.config.core.v3.Node`, the fields istiod sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub cluster: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Struct>,
    #[prost(message, optional, tag = "4")]
    pub locality: Option<Locality>,
    #[prost(string, tag = "6")]
    pub user_agent_name: String,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Locality {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub zone: String,
    #[prost(string, tag = "3")]
    pub sub_zone: String,
}

/// `envoy.config.core.v3.ControlPlane`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlPlane {
    #[prost(string, tag = "1")]
    pub identifier: String,
}

/// `google.rpc.Status`: only ever read, to log a NACK istiod does not send today.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `istio.mcp.v1alpha1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, optional, tag = "2")]
    pub body: Option<Any>,
}

/// `istio.mcp.v1alpha1.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// `namespace/name`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub create_time: Option<Timestamp>,
    /// istiod updates its copy only when this changes.
    #[prost(string, tag = "3")]
    pub version: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "5")]
    pub annotations: BTreeMap<String, String>,
}

/// `istio.networking.v1alpha3.ServiceEntry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceEntry {
    #[prost(string, repeated, tag = "1")]
    pub hosts: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub addresses: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub ports: Vec<ServicePort>,
    #[prost(enumeration = "Location", tag = "4")]
    pub location: i32,
    #[prost(enumeration = "Resolution", tag = "5")]
    pub resolution: i32,
    #[prost(message, repeated, tag = "6")]
    pub endpoints: Vec<WorkloadEntry>,
    #[prost(string, repeated, tag = "7")]
    pub export_to: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub subject_alt_names: Vec<String>,
    #[prost(message, optional, tag = "9")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// `istio.networking.v1alpha3.ServicePort`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServicePort {
    #[prost(uint32, tag = "1")]
    pub number: u32,
    #[prost(string, tag = "2")]
    pub protocol: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint32, tag = "4")]
    pub target_port: u32,
}

/// `istio.networking.v1alpha3.WorkloadEntry`: an inline endpoint and a WorkloadEntry's spec.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEntry {
    #[prost(string, tag = "1")]
    pub address: String,
    #[prost(btree_map = "string, uint32", tag = "2")]
    pub ports: BTreeMap<String, u32>,
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: BTreeMap<String, String>,
    #[prost(string, tag = "4")]
    pub network: String,
    #[prost(string, tag = "5")]
    pub locality: String,
    #[prost(uint32, tag = "6")]
    pub weight: u32,
    #[prost(string, tag = "7")]
    pub service_account: String,
}

/// `istio.networking.v1alpha3.WorkloadSelector`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadSelector {
    #[prost(btree_map = "string, string", tag = "1")]
    pub labels: BTreeMap<String, String>,
}

/// `istio.networking.v1alpha3.ServiceEntry.Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Location {
    MeshExternal = 0,
    MeshInternal = 1,
}

/// `istio.networking.v1alpha3.ServiceEntry.Resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Resolution {
    None = 0,
    Static = 1,
    Dns = 2,
    DnsRoundRobin = 3,
}
