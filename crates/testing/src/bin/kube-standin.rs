//! `kube-standin [--port N]`: runs the Kubernetes API server stand-in on 127.0.0.1 for
//! manual experiments (test support only). Prints the URL, then serves until Ctrl-C.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use registry_sync_testing::kube::StandIn;

const USAGE: &str = "usage: kube-standin [--port PORT]\n\n\
    Serves a Kubernetes API stand-in (Istio ServiceEntry/WorkloadEntry, Lease) on 127.0.0.1.\n\
    Test support only. Point kubectl or kube-rs at the printed URL (plain HTTP, no auth).";

/// The port to listen on, or `None` when help was asked for.
fn port_from_args() -> Result<Option<u16>, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {value}"))?;
            }
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument: {other}\n\n{USAGE}")),
        }
    }
    Ok(Some(port))
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match port_from_args() {
        Ok(Some(port)) => port,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let server = match StandIn::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("kube-standin: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}
