//! The `fjord` command line: `fjord broker` runs a node; every other command is an admin or
//! data tool that speaks the Kafka protocol through [`client`], so it works against Fjord and
//! against Apache Kafka alike. Exit codes are listed in [`exit`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

pub mod broker_cmd;
pub mod client;
pub mod cmd;
pub mod exit;
pub mod output;
pub mod profile;

use client::{Client, ConnOptions};
use exit::CliError;
use output::Format;

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage, 3 broker unreachable or timed out, \
4 not found (topic, group, partition), 5 conflict (exists already, group has active members), \
6 cluster unhealthy.\n\
Brokers: -b/--brokers, else FJORD_BROKERS, else the profile (--profile or FJORD_PROFILE, else \
default_profile) in $FJORD_CONFIG or ~/.config/fjord/config.toml, else 127.0.0.1:9092.";

#[derive(Parser, Debug)]
#[command(
    name = "fjord",
    version,
    about = "Kafka-compatible event streaming: run a broker, administer any Kafka-compatible cluster",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(short = 'b', long, global = true, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// Named profile from the config file.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Timeout of each request to a broker, in milliseconds.
    #[arg(long, global = true, value_name = "MS")]
    request_timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker and/or controller (per `process.roles`) until SIGTERM or SIGINT.
    Broker {
        /// TOML file with Kafka property names as keys, e.g. config/single-node.toml.
        #[arg(long, short)]
        config: std::path::PathBuf,
        /// Override one property, e.g. `--set log.dirs=/tmp/fjord`; may be repeated.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Create, list, describe, delete and alter topics.
    #[command(subcommand)]
    Topic(cmd::topic::TopicCmd),
    /// Consumer groups: list, describe, lag, reset offsets (replay), delete.
    #[command(subcommand)]
    Group(cmd::group::GroupCmd),
    /// Produce records: one per line of stdin or of a file.
    Produce(cmd::produce::ProduceArgs),
    /// Consume records and print them.
    Consume(cmd::consume::ConsumeArgs),
    /// Describe or change topic and broker configs.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Cluster overview and health check.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Load tests: producer and consumer throughput and latency.
    #[command(subcommand)]
    Perf(cmd::perf::PerfCmd),
    /// Print a shell completion script, e.g. `fjord completions bash > /etc/bash_completion.d/fjord`.
    Completions { shell: clap_complete::Shell },
}

/// What every admin command gets: the client and the output format.
pub struct Ctx {
    pub client: Arc<Client>,
    pub format: Format,
    /// Where the broker list came from ("--brokers", "FJORD_BROKERS", a profile...).
    pub source: String,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Entry point shared by the `fjord` binary and the test harness's copy of it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.output;
    match cli.command {
        Command::Broker { config, set } => {
            init_logging("info,openraft=warn");
            broker_cmd::run_broker(config, set)
        }
        Command::Completions { shell } => {
            restore_sigpipe();
            clap_complete::generate(shell, &mut Cli::command(), "fjord", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        command => {
            restore_sigpipe();
            init_logging("warn");
            let result = run_admin(
                command,
                cli.brokers.as_deref(),
                cli.profile.as_deref(),
                cli.request_timeout_ms,
                format,
            );
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e, format),
            }
        }
    }
}

/// Admin commands end quietly when their output pipe closes (`fjord topic list | head`), as
/// Unix tools do, instead of panicking in `println!`. Rust ignores SIGPIPE by default; the
/// broker keeps that (a client hanging up must not kill it), so only the CLI restores it.
fn restore_sigpipe() {
    // Safety: sets the disposition of one signal to its default before other threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn report(e: &CliError, format: Format) -> ExitCode {
    let code = e.code();
    if format == Format::Json {
        let v = serde_json::json!({
            "error": e.to_string(),
            "exit_code": code,
            "hint": e.hint(),
        });
        eprintln!("{v}");
    } else {
        eprintln!("fjord: error: {e}");
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }
    ExitCode::from(code)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_admin(
    command: Command,
    brokers: Option<&str>,
    profile: Option<&str>,
    timeout_ms: Option<u64>,
    format: Format,
) -> exit::Result<()> {
    let target = profile::resolve(brokers, profile)?;
    let timeout = Duration::from_millis(
        timeout_ms
            .or(target.request_timeout_ms)
            .unwrap_or(30_000)
            .max(1),
    );
    let opts = ConnOptions {
        connect_timeout: timeout.min(Duration::from_secs(10)),
        request_timeout: timeout,
        client_id: "fjord-cli".into(),
    };
    let ctx = Ctx {
        client: Arc::new(Client::new(target.brokers, opts)),
        format,
        source: target.source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fjord-cli")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        match command {
            Command::Topic(c) => cmd::topic::run(&ctx, c).await,
            Command::Group(c) => cmd::group::run(&ctx, c).await,
            Command::Produce(a) => cmd::produce::run(&ctx, a).await,
            Command::Consume(a) => cmd::consume::run(&ctx, a).await,
            Command::Config(c) => cmd::config::run(&ctx, c).await,
            Command::Cluster(c) => cmd::cluster::run(&ctx, c).await,
            Command::Perf(c) => cmd::perf::run(&ctx, c).await,
            Command::Broker { .. } | Command::Completions { .. } => Ok(()),
        }
    })
}
