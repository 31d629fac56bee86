//! mesh developer tasks, run as `cargo xtask <command>` (alias in
//! .cargo/config.toml). See README.md.

mod bench;
mod daemon;
mod demo;
mod fuzz;
mod peers;
mod setup;
mod test;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::setup::Want;
use crate::util::{cargo, run};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "mesh developer tasks: setup, build, test, run, demo, bench, fuzz"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (nightly + rust-src, Debian packages, bpf-linker,
    /// the end-to-end tests' peers in target/peers); idempotent.
    Setup {
        /// Also install the benchmark tools (oha).
        #[arg(long)]
        bench: bool,
        /// Also install the fuzzing tool (cargo-fuzz).
        #[arg(long)]
        fuzz: bool,
    },
    /// Build mesh-agent and meshctl (and, through build.rs, the eBPF object).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run every test tier (needs root): `cargo test --workspace --no-fail-fast [ARGS]`.
    Test {
        /// Extra arguments for `cargo test`, after `--`
        /// (e.g. `cargo xtask test -- -p mesh-tests -- --nocapture`).
        #[arg(last = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run the daemon in the foreground (needs root).
    Run {
        /// Config file for `mesh-agent run`; default: a generated development
        /// config in target/xtask-run/ governing only <cgroup2>/mesh-dev.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the demo.
    Demo,
    /// Run the benchmarks and write docs/benchmarks.md.
    Bench,
    /// Fuzz the L7 parsers (fuzz/, cargo-fuzz, nightly), one target at a time;
    /// fails if a target found a crash. Not part of `test`.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Targets to run (default: all): sse, llm_usage, http_jsonrpc.
        targets: Vec<String>,
    },
}

fn main() -> ExitCode {
    util::ensure_cargo_bin_on_path();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup { bench, fuzz } => setup::setup(Want { bench })
            .and_then(|()| {
                if fuzz {
                    fuzz::ensure_cargo_fuzz()
                } else {
                    Ok(())
                }
            })
            .map(|()| ExitCode::SUCCESS),
        Cmd::Build { release } => build(release).map(|()| ExitCode::SUCCESS),
        Cmd::Test { args } => test::test(&args),
        Cmd::Run { config } => daemon::run_daemon(config),
        Cmd::Demo => demo(),
        Cmd::Bench => bench(),
        Cmd::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo build -p mesh-agent [--release]` after making sure the toolchain is there.
fn build(release: bool) -> Result<()> {
    setup::ensure_setup(Want { bench: false })?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "mesh-agent"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// The demo (xtask/src/demo.rs).
fn demo() -> Result<ExitCode> {
    demo::demo()
}

/// The side-by-side benchmark (docs/benchmarks.md). Not written yet: the lead
/// writes it. It should start with `setup::ensure_setup(Want { bench: true })`,
/// which installs oha when missing.
fn bench() -> Result<ExitCode> {
    bench::run_bench()
}
