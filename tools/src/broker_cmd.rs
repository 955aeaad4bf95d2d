//! `fjord broker --config FILE [--set key=value ...]`: runs a node until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use fjord_broker::{BrokerConfig, Node};

pub fn run_broker(path: PathBuf, overrides: Vec<String>) -> ExitCode {
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
        if let Some(addr) = node.http_addr {
            println!("fjord: http listening {addr}");
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
