//! The `fjord` command line. `fjord broker --config FILE [--set key=value ...]` runs a node;
//! the admin commands arrive with issue #6.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fjord_broker::{BrokerConfig, Node};

#[derive(Parser, Debug)]
#[command(name = "fjord", version, about = "Kafka-compatible event streaming")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker and/or controller (per `process.roles`) until SIGTERM or SIGINT.
    Broker {
        /// TOML file with Kafka property names as keys, e.g. config/single-node.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Override one property, e.g. `--set log.dirs=/tmp/fjord`; may be repeated.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// Entry point shared by the `fjord` binary and the test harness's copy of it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Broker { config, set } => run_broker(config, set),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_broker(path: PathBuf, overrides: Vec<String>) -> ExitCode {
    let config = match BrokerConfig::load(&path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fjord: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fjord")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fjord: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let node = match Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("fjord: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (name, addr) in &node.client_addrs {
            // One stable line tools and tests can wait for.
            println!("fjord: listening {name} {addr}");
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        match node.shutdown().await {
            Ok(()) => {
                tracing::info!("clean shutdown");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "shutdown did not complete cleanly");
                ExitCode::FAILURE
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on ctrl-c only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
