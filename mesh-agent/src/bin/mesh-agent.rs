//! `mesh-agent`: the daemon.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mesh_agent::{
    config::{self, Config},
    daemon,
};

/// The hot path allocates per request (hyper's heads, the buffered body, the
/// record): mimalloc's thread-local free lists cost about half of glibc
/// malloc's CPU there (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mesh-agent",
    version,
    about = "mesh: runtime governance for AI agents (daemon)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (foreground).
    Run {
        /// YAML config; embedded defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Detach the kernel programs and remove all pinned state (uninstall).
    Cleanup {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run { config } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                let mut runtime = tokio::runtime::Builder::new_multi_thread();
                // Tuning knob for measurement (docs/benchmarks.md); default:
                // one worker per CPU.
                if let Some(n) = config::runtime_worker_threads() {
                    runtime.worker_threads(n);
                }
                runtime
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)?
                    .block_on(daemon::run(config))
            }),
        Command::Cleanup { config } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|config| daemon::cleanup(&config)),
    };
    if let Err(e) = result {
        eprintln!("mesh-agent: error: {e:#}");
        std::process::exit(1);
    }
}
