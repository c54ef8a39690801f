//! The `registry-sync` command line.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use registry_sync::commands::{self, Outcome};
use registry_sync::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Keeps Istio ServiceEntries and WorkloadEntries in step with service registries.
///
/// registry-sync watches service registries (file, etcd, ZooKeeper, Consul, Eureka,
/// Nacos, AWS Cloud Map, DNS SRV), translates what they hold into networking.istio.io/v1
/// objects following Istio's rules (hosts, ports, healthy endpoints only, sanitised
/// labels), and writes only what changed: to the Kubernetes API (server-side apply,
/// leader election), to a directory of YAML files, to stdout, or straight to istiod as
/// an MCP-over-xDS config source. Objects it did not create are never touched; a
/// registry that fails keeps its objects.
#[derive(Parser)]
#[command(
    name = "registry-sync",
    version,
    propagate_version = true,
    after_long_help = "Examples:\n  registry-sync render --config examples/quickstart/sync.yaml   # the objects, as YAML\n  registry-sync plan   --config sync.yaml   # what would change; exit 0 in sync, 2 pending, 1 error\n  registry-sync run    --config sync.yaml   # keep syncing until SIGINT/SIGTERM\n\nThe configuration file lists `registries` (name, kind, hosts template, namespace,\nendpoints mode, and each kind's connection keys) and `sinks` (kubernetes, files dir,\nstdout); see docs/configuration.md for every key."
)]
struct Cli {
    /// More log detail: -v debug, -vv trace. RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "REGISTRY_SYNC_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file (YAML). Relative paths inside it are relative to it.
    #[arg(short, long, value_name = "FILE", env = "REGISTRY_SYNC_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct WriteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Let a pass delete more than `safety.max_delete_share` of a registry's objects
    /// (held back otherwise, as a registry that suddenly answers "nothing" is far more
    /// often broken than emptied).
    #[arg(long)]
    confirm_mass_delete: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Watch every registry and keep every sink in step until SIGINT or SIGTERM; with
    /// `sinks.mcp`, also serve the objects to istiod as an MCP-over-xDS config source.
    Run(WriteArgs),
    /// Read every registry once, sync every sink once, then exit (1 if anything failed,
    /// 3 if the mass-change guard held changes back).
    Once(WriteArgs),
    /// `once`, and also delete objects of registries the configuration no longer names
    /// (a renamed or removed registry); `plan` lists them as orphans first.
    Prune(WriteArgs),
    /// Show what a sync would change, writing nothing. Exit 0 in sync, 2 changes pending, 1 error.
    Plan(ConfigArg),
    /// Print every object as multi-document YAML on stdout, sorted by kind, namespace, name.
    Render(ConfigArg),
    /// Validate the configuration and reach every registry.
    Check(ConfigArg),
    /// Why a service or host looks as it does: the registry records behind it, each rule
    /// that shaped it, every instance's fate, its objects and their diff against each
    /// sink. Exit 0 when found, 1 when not (or a registry failed).
    Explain(ExplainArgs),
}

#[derive(Args)]
struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A service name (or `namespace/name`), a host, or an object name.
    query: String,
}

fn init_logging(verbose: u8, format: LogFormat) {
    registry_sync::progress::allow_bars(matches!(format, LogFormat::Text));
    let default = match verbose {
        // nacos-sdk logs every push and, while Nacos is down, every failed retry of
        // every subscription; the Nacos source reports failures itself. Never below
        // info even with -vv: its debug output is not vetted for access tokens.
        0 => "info,nacos_sdk=off",
        1 => "info,registry_sync=debug,nacos_sdk=off",
        _ => "debug,registry_sync=trace,nacos_sdk=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder
            .with_writer(registry_sync::logs::EscapedStderr { ansi })
            .init(),
        LogFormat::Json => builder.with_writer(std::io::stderr).json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let (arg, confirm_mass_delete) = match &cli.command {
        Command::Run(w) | Command::Once(w) | Command::Prune(w) => (&w.config, w.confirm_mass_delete),
        Command::Plan(arg) | Command::Render(arg) | Command::Check(arg) => (arg, false),
        Command::Explain(e) => (&e.config, false),
    };
    let config = match Config::load(&arg.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Outcome::Failed as u8);
        }
    };
    let mut config = config;
    config.safety.confirm_mass_delete |= confirm_mass_delete;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Outcome::Failed as u8);
        }
    };
    let result = runtime.block_on(async {
        let mut stdout = std::io::stdout();
        match cli.command {
            Command::Render(_) => commands::render(&config, &mut stdout).await,
            Command::Plan(_) => commands::plan(&config, &mut stdout).await,
            Command::Once(_) => commands::once(&config).await,
            Command::Prune(_) => commands::prune(&config).await,
            Command::Check(_) => commands::check(&config, &mut stdout).await,
            Command::Explain(e) => commands::explain(&config, &e.query, &mut stdout).await,
            Command::Run(_) => {
                let cancel = CancellationToken::new();
                registry_sync::run::cancel_on_signals(cancel.clone());
                registry_sync::run::run(config, cancel)
                    .await
                    .map(|()| Outcome::Ok)
            }
        }
    });
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(Outcome::Failed as u8)
        }
    }
}

/// An estate is millions of small, long-lived allocations made on one thread (the
/// source's parse, the feed loop's translation) and freed on others; the system
/// allocator's per-thread arenas keep about half as much again resident as the live
/// heap there. mimalloc keeps far less, and without transparent huge pages (`no_thp`)
/// it does not round its segments up to 2 MiB either (the runtime bench's memory row).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
