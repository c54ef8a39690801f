//! Objects and a server on loopback, for the tests of this crate and the binary's.

use std::net::SocketAddr;
use std::sync::Arc;

use registry_sync_istio::IstioObject;
use registry_sync_plan::Plan;

use crate::served::Served;
use crate::server::{Ads, ServerTls, Serving, Unobserved};
use crate::sink::McpSink;

/// The MCP server on an ephemeral loopback port, fed by the returned sink.
pub async fn serve_loopback() -> (SocketAddr, McpSink) {
    serve_loopback_with(crate::server::DEFAULT_MAX_STREAMS).await
}

/// [`serve_loopback`], serving at most `max_streams` streams at once, on a bare tonic
/// server that takes any number of connections (the streams' limit alone).
pub async fn serve_loopback_with(max_streams: usize) -> (SocketAddr, McpSink) {
    let (sink, offers) = McpSink::new();
    let ads = Ads::new(offers, Arc::new(Unobserved)).max_streams(max_streams);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("a bound address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (address, sink)
}

/// The server as `run` starts it ([`Serving`]: its connections limited too, TLS when
/// `tls` is given), on an ephemeral loopback port.
pub async fn serve_loopback_as_run(max_streams: usize, tls: Option<&ServerTls>) -> (SocketAddr, McpSink) {
    let (sink, offers) = McpSink::new();
    let ads = Ads::new(offers, Arc::new(Unobserved)).max_streams(max_streams);
    let serving = Serving::bind("127.0.0.1:0".parse().expect("an address"), ads, tls)
        .await
        .expect("a loopback port and a usable certificate");
    let address = serving.local_addr().expect("a bound address");
    tokio::spawn(serving.run(std::future::pending()));
    (address, sink)
}

/// Serves exactly `objects` on an ephemeral loopback port, without the sink's
/// pre-check: what istiod itself makes of an object the sink would refuse.
pub async fn serve_unchecked(objects: &[IstioObject]) -> SocketAddr {
    let mut served = Served::default();
    let now = std::time::SystemTime::now();
    for object in objects {
        served.upsert(object, now);
    }
    served.complete();
    let (offers, receiver) = tokio::sync::watch::channel(served.offer());
    let ads = Ads::new(receiver, Arc::new(Unobserved));
    let serving = Serving::bind("127.0.0.1:0".parse().expect("an address"), ads, None)
        .await
        .expect("a loopback port");
    let address = serving.local_addr().expect("a bound address");
    tokio::spawn(async move {
        // The set never changes; its sender lives as long as the server.
        let _offers = offers;
        serving.run(std::future::pending()).await
    });
    address
}

/// A STATIC ServiceEntry `mesh/<name>` for `<name>.legacy:8080` with these endpoints.
pub fn service_entry(name: &str, addresses: &[&str]) -> Arc<IstioObject> {
    Arc::new(registry_sync_istio::testing::service_entry(
        "mesh", name, addresses,
    ))
}

pub fn creates(objects: Vec<Arc<IstioObject>>) -> Plan {
    Plan {
        creates: objects,
        ..Plan::default()
    }
}

pub fn updates(objects: Vec<Arc<IstioObject>>) -> Plan {
    Plan {
        updates: objects,
        ..Plan::default()
    }
}
