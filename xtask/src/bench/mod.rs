//! `cargo xtask bench`: the side-by-side benchmark of docs/benchmarks.md.
//!
//! One run measures four targets with the same load tool (`mesh-bench`, in
//! `benches/`), interleaved (A B C D, A B C D, …): the echo and sink servers
//! directly, through nginx as a plain stream proxy, and through mesh-agent
//! with each relay strategy (`MESH_RELAY=splice` and `MESH_RELAY=copy`).
//! The mesh clients run governed (`meshctl exec --agent bench -- …`), so
//! the kernel redirects their connects to the daemon exactly as for an agent.
//! Then it measures the daemon's resident memory idle and while 1,000 proxied
//! connections are held, and writes docs/benchmarks.md from the numbers of
//! this run only.
//!
//! Everything stays on loopback: servers on 127.0.0.2, nginx on 127.0.0.3,
//! the daemon on 127.0.0.1 / [::1]. The daemon attaches only to
//! `<cgroup2 mount>/mesh-bench` (never the cgroup root); guards stop what
//! was started (by pid), detach and unpin (`mesh-agent cleanup`) and remove
//! the cgroups, on failure too.
//!
//! A second part (`mcp.rs`) measures MCP `tools/call` round trips
//! over HTTP with `oha`: directly to an nginx backend, through nginx as an
//! HTTP reverse proxy, and through mesh-agent parsing every call.
//!
//! A third part (`policy.rs`) measures the policy engine in-process,
//! with no daemon and no network: the divan benchmark
//! `mesh-policy/benches/policy.rs` (decision latency for a `tools/call`
//! against 1,000 agents x 50 rules, reload time of that set) and the
//! allocation test `mesh-policy/tests/policy_alloc.rs` (an allowed decision
//! makes no heap allocation).
//!
//! A fourth part (`budget.rs`) measures the budget ledger in-process:
//! the benchmark `mesh-budget/benches/budget.rs` (reserve + settle in memory
//! and with redb, allocations per call, and the group commit with 1, 8 and
//! 64 concurrent settlers).
//!
//! The files: `env.rs` (paths, ports, the daemon's config), `procs.rs`
//! (servers and nginx), `daemon.rs` (mesh-agent under the test bed's guard),
//! `client.rs` (running a load client), `cpu.rs` (other work's CPU), one
//! file per part (`tcp.rs`, `mcp.rs`, `policy.rs`, `budget.rs`, with
//! `divan.rs` and `json.rs` reading the tools' output), and the document:
//! `report.rs` (head, daemon logs from `logs.rs`, problems),
//! `tcp_report.rs`, `mcp_report.rs`, `targets.rs`.
//!
//! `MESH_BENCH_REPS` and `MESH_BENCH_SECONDS` shorten a run while working on
//! the harness; the document then says so (they do not apply to the policy
//! part, whose sampling is the benchmark's own). `MESH_BENCH_ONLY=tcp`,
//! `MESH_BENCH_ONLY=mcp`, `MESH_BENCH_ONLY=policy` or `MESH_BENCH_ONLY=budget`
//! runs one part only and
//! writes its report to `target/bench/benchmarks.md`, leaving
//! docs/benchmarks.md alone.
//! For diagnosis, `MESH_BENCH_RUST_LOG` replaces the daemon's `RUST_LOG=info`
//! and `MESH_WORKER_THREADS` (read by the daemon) sets its tokio workers; the
//! document then says the run was a diagnostic one.
//!
//! Each measurement also records how much CPU other work took meanwhile
//! (other processes in this machine; the hypervisor's steal time), so that a
//! disturbed repetition can be told from a slow target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

mod budget;
mod client;
mod cpu;
mod daemon;
mod divan;
mod env;
mod json;
mod logs;
mod mcp;
mod mcp_report;
mod policy;
mod procs;
mod report;
mod targets;
mod tcp;
mod tcp_report;

use client::*;
use cpu::*;
use daemon::*;
use env::*;
use logs::*;
use procs::*;
use report::*;
use tcp::*;
use tcp_report::*;

use mesh_testbed::{
    free_port, free_port_pair, http_get, DaemonConfig, DaemonOptions, Footprint, StartError,
};

use crate::setup::{ensure_setup, Want};
use crate::util::{
    cargo, cgroup2_mount, display_cmd, ensure_bpffs, is_root, repo_root, run, target_dir,
};

const REPS: usize = 3;
const SECONDS: u64 = 10;
const CONNECT_COUNT: usize = 2000;
const PACED_RATE: u64 = 1000;
const PACED_CONNS: usize = 16;
const MAX_CONNS: usize = 32;
const THROUGHPUT_CONNS: usize = 4;
const REQUEST_SIZE: usize = 1024;
const HOLD_CONNS: usize = 1000;
/// File descriptor limit for the daemon and the clients (`ulimit -n`).
const NOFILE: u32 = 65536;
/// The agent name the governed clients run as.
const AGENT: &str = "bench";
/// Below the cgroup2 mount; never the mount itself.
const CGROUP_NAME: &str = "mesh-bench";
const BPFFS_DIR: &str = "/sys/fs/bpf/mesh-bench";
/// The targets the report checks.
const P50_FACTOR_TARGET: f64 = 1.5;
const RSS_TARGET_MIB: f64 = 50.0;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    Direct,
    Nginx,
    MeshSplice,
    MeshCopy,
}

const TARGETS: [Target; 4] = [
    Target::Direct,
    Target::Nginx,
    Target::MeshSplice,
    Target::MeshCopy,
];

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::MeshSplice => "mesh (splice)",
            Target::MeshCopy => "mesh (copy)",
        }
    }

    /// `MESH_RELAY` for the mesh targets.
    fn relay(self) -> Option<&'static str> {
        match self {
            Target::MeshSplice => Some("splice"),
            Target::MeshCopy => Some("copy"),
            Target::Direct | Target::Nginx => None,
        }
    }
}

/// The three parts of a run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// Opaque TCP: mesh-bench against echo and sink servers, daemon memory.
    Tcp,
    /// MCP tools/call over HTTP with oha (mcp.rs).
    Mcp,
    /// Policy decisions in-process: divan benchmark, allocation test
    /// (policy.rs).
    Policy,
    /// The budget ledger in-process: divan benchmark, group commit
    /// (budget.rs).
    Budget,
}

impl Part {
    /// Its `MESH_BENCH_ONLY` value.
    fn name(self) -> &'static str {
        match self {
            Part::Tcp => "tcp",
            Part::Mcp => "mcp",
            Part::Policy => "policy",
            Part::Budget => "budget",
        }
    }
}

/// Run length, from the environment for quick runs of the harness itself.
struct Params {
    reps: usize,
    seconds: u64,
    /// `MESH_BENCH_ONLY`: one part only (the report then goes to target/bench).
    only: Option<Part>,
}

impl Params {
    fn from_env() -> Result<Params> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => v
                    .parse()
                    .ok()
                    .with_context(|| format!("{name}={v}: not a positive number")),
                _ => Ok(default),
            }
        }
        let only = match std::env::var("MESH_BENCH_ONLY").as_deref() {
            Err(_) | Ok("") | Ok("all") => None,
            Ok("tcp") => Some(Part::Tcp),
            Ok("mcp") => Some(Part::Mcp),
            Ok("policy") => Some(Part::Policy),
            Ok("budget") => Some(Part::Budget),
            Ok(v) => bail!("MESH_BENCH_ONLY={v}: expected tcp, mcp, policy or budget"),
        };
        let p = Params {
            reps: var("MESH_BENCH_REPS", REPS)?,
            seconds: var("MESH_BENCH_SECONDS", SECONDS)?,
            only,
        };
        ensure!(
            p.reps > 0 && p.seconds > 0,
            "MESH_BENCH_REPS and MESH_BENCH_SECONDS must be positive"
        );
        Ok(p)
    }

    fn is_default(&self) -> bool {
        self.reps == REPS && self.seconds == SECONDS
    }

    fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|p| p == part)
    }
}

pub fn run_bench() -> Result<ExitCode> {
    if !is_root() {
        bail!(
            "cargo xtask bench must run as root: mesh-agent loads eBPF programs, \
             attaches them to a cgroup of its own and pins maps under /sys/fs/bpf"
        );
    }
    let params = Params::from_env()?;
    ensure_setup(Want { bench: true })?;
    ensure_bpffs()?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "mesh-agent",
        "-p",
        "mesh-benches",
    ]))?;

    let env = prepare(&params)?;
    let started = Instant::now();
    let load_at_start = loadavg();

    let mut daemon_logs: Vec<PathBuf> = Vec::new();
    let tcp = if params.runs(Part::Tcp) {
        let t = Instant::now();
        let cpu = CpuSample::take();
        let (runs, memory, nginx_version) = run_tcp(&env, &params, &mut daemon_logs)?;
        Some(TcpPart {
            runs,
            memory,
            nginx_version,
            elapsed: t.elapsed(),
            other_cpu: cpu.other_pct(),
        })
    } else {
        None
    };
    let mcp = if params.runs(Part::Mcp) {
        Some(mcp::run(&env, &params, &mut daemon_logs)?)
    } else {
        None
    };
    let policy = params.runs(Part::Policy).then(|| policy::run(&env));
    let budget = params.runs(Part::Budget).then(|| budget::run(&env));

    let logs = scan_daemon_logs(&daemon_logs);
    let doc = render(&Report {
        params: &params,
        env: &env,
        tcp: tcp.as_ref(),
        mcp: mcp.as_ref(),
        policy: policy.as_ref(),
        budget: budget.as_ref(),
        logs: &logs,
        elapsed: started.elapsed(),
        load_at_start,
    });
    let out = if params.only.is_some() {
        env.dir.join("benchmarks.md")
    } else {
        repo_root().join("docs").join("benchmarks.md")
    };
    std::fs::write(&out, doc).with_context(|| format!("write {}", out.display()))?;
    println!(
        "bench: wrote {} ({:.0} s); logs in {}",
        out.display(),
        started.elapsed().as_secs_f64(),
        env.dir.display()
    );
    let failed = tcp.as_ref().is_some_and(|t| {
        t.runs.iter().any(|r| !r.errors.is_empty()) || t.memory.iter().any(|(_, m)| m.is_err())
    }) || mcp.as_ref().is_some_and(mcp::McpPart::failed)
        || policy.as_ref().is_some_and(policy::PolicyPart::failed)
        || budget.as_ref().is_some_and(budget::BudgetPart::failed);
    Ok(if failed {
        eprintln!(
            "bench: some measurements failed; see the Problems section of {}",
            out.display()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
