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
//! A second part (`bench_mcp.rs`) measures MCP `tools/call` round trips
//! over HTTP with `oha`: directly to an nginx backend, through nginx as an
//! HTTP reverse proxy, and through mesh-agent parsing every call.
//!
//! A third part (`bench_policy.rs`) measures the policy engine in-process,
//! with no daemon and no network: the divan benchmark
//! `mesh-policy/benches/policy.rs` (decision latency for a `tools/call`
//! against 1,000 agents x 50 rules, reload time of that set) and the
//! allocation test `mesh-policy/tests/policy_alloc.rs` (an allowed decision
//! makes no heap allocation).
//!
//! A fourth part (`bench_budget.rs`) measures the budget ledger in-process:
//! the benchmark `mesh-budget/benches/budget.rs` (reserve + settle in memory
//! and with redb, allocations per call, and the group commit with 1, 8 and
//! 64 concurrent settlers).
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
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

mod budget;
mod divan;
mod mcp;
mod policy;
mod targets;

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
/// The targets of the issue.
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
    /// MCP tools/call over HTTP with oha (bench_mcp.rs).
    Mcp,
    /// Policy decisions in-process: divan benchmark, allocation test
    /// (bench_policy.rs).
    Policy,
    /// The budget ledger in-process: divan benchmark, group commit
    /// (bench_budget.rs).
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

/// Paths, addresses and binaries of one benchmark run.
struct Env {
    dir: PathBuf,
    bench_bin: PathBuf,
    agent_bin: PathBuf,
    meshctl_bin: PathBuf,
    config: PathBuf,
    admin_socket: PathBuf,
    data_dir: PathBuf,
    metrics: SocketAddr,
    attach_cgroup: PathBuf,
    parent_cgroup: PathBuf,
    bpffs_dir: PathBuf,
    echo: SocketAddr,
    sink: SocketAddr,
    nginx_echo: SocketAddr,
    nginx_sink: SocketAddr,
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

/// What the opaque TCP part measured.
struct TcpPart {
    runs: Vec<RunResult>,
    memory: Vec<(&'static str, Result<Memory>)>,
    nginx_version: String,
    elapsed: Duration,
    /// CPU other work used meanwhile, % of the machine.
    other_cpu: Option<OtherCpu>,
}

/// CPU time (clock ticks) at one moment: the machine's user + nice + system
/// time (/proc/stat), that of this run's process tree (this process and its
/// live descendants, each with its reaped children), and that of kernel
/// threads (which include softirq work done for the run's own traffic),
/// and the time the hypervisor ran something else instead (steal). The
/// difference of two samples is what other work on the machine used.
struct CpuSample {
    at: Instant,
    busy: u64,
    steal: u64,
    ours: u64,
    kernel: u64,
}

/// What other work took while a measurement ran, in % of the machine (all
/// its CPUs).
#[derive(Clone, Copy)]
struct OtherCpu {
    /// Processes outside this run, inside this machine.
    other: f64,
    /// Time the hypervisor gave to others (steal, /proc/stat).
    steal: f64,
}

impl OtherCpu {
    fn show(self) -> String {
        format!("{:.1} / {:.1}", self.other, self.steal)
    }

    fn insert_into(self, values: &mut BTreeMap<&'static str, f64>) {
        values.insert("other_cpu", self.other);
        values.insert("steal", self.steal);
    }

    fn from_values(values: &BTreeMap<&'static str, f64>) -> String {
        match (values.get("other_cpu"), values.get("steal")) {
            (Some(&other), Some(&steal)) => OtherCpu { other, steal }.show(),
            _ => "n/a".into(),
        }
    }
}

impl CpuSample {
    fn take() -> CpuSample {
        // cpu  user nice system idle iowait irq softirq steal …
        let fields: Vec<u64> = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("cpu "))?.to_owned();
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                )
            })
            .unwrap_or_default();
        let busy = fields.iter().take(3).sum();
        let steal = fields.get(7).copied().unwrap_or(0);
        // pid -> (ppid, utime + stime + cutime + cstime)
        let mut procs: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                    continue;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                procs.insert(pid, (num(1) as u32, num(11) + num(12) + num(13) + num(14)));
            }
        }
        let me = std::process::id();
        let in_tree = |mut pid: u32, root: u32| {
            for _ in 0..64 {
                if pid == root {
                    return true;
                }
                match procs.get(&pid) {
                    Some(&(ppid, _)) if ppid != 0 => pid = ppid,
                    _ => return false,
                }
            }
            false
        };
        let (mut ours, mut kernel) = (0, 0);
        for (&pid, &(_, ticks)) in &procs {
            if in_tree(pid, me) {
                ours += ticks;
            } else if in_tree(pid, 2) {
                kernel += ticks;
            }
        }
        CpuSample {
            at: Instant::now(),
            busy,
            steal,
            ours,
            kernel,
        }
    }

    /// CPU that other work used since this sample, in % of the machine
    /// (all CPUs); `None` when /proc could not be read.
    fn other_pct(&self) -> Option<OtherCpu> {
        let now = CpuSample::take();
        let tick: f64 = command_line("getconf", &["CLK_TCK"])
            .parse()
            .unwrap_or(100.0);
        let ncpu = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = now.at.duration_since(self.at).as_secs_f64() * tick * ncpu;
        if self.busy == 0 || now.busy == 0 || capacity <= 0.0 {
            return None;
        }
        let other = now.busy.saturating_sub(self.busy) as f64
            - now.ours.saturating_sub(self.ours) as f64
            - now.kernel.saturating_sub(self.kernel) as f64;
        let steal = now.steal.saturating_sub(self.steal) as f64;
        Some(OtherCpu {
            other: (other / capacity * 100.0).clamp(0.0, 100.0),
            steal: (steal / capacity * 100.0).clamp(0.0, 100.0),
        })
    }
}

type MemoryResults = Vec<(&'static str, Result<Memory>)>;

/// The opaque TCP part: the four targets interleaved, then daemon memory.
fn run_tcp(
    env: &Env,
    params: &Params,
    daemon_logs: &mut Vec<PathBuf>,
) -> Result<(Vec<RunResult>, MemoryResults, String)> {
    // Servers and nginx first; guards stop them whatever happens next.
    let _echo = Proc::spawn(
        "echo server",
        env.bench_command(&["echo", "--listen", &env.echo.to_string()]),
        &env.dir.join("echo.log"),
    )?;
    let _sink = Proc::spawn(
        "sink server",
        env.bench_command(&["sink", "--listen", &env.sink.to_string()]),
        &env.dir.join("sink.log"),
    )?;
    wait_listening(env.echo, "echo server")?;
    wait_listening(env.sink, "sink server")?;
    let nginx = Nginx::start_stream(env)?;
    let nginx_version = nginx.version.clone();

    let mut runs: Vec<RunResult> = Vec::new();
    for rep in 1..=params.reps {
        for target in TARGETS {
            println!(
                "bench: [{rep}/{reps}] {}",
                target.label(),
                reps = params.reps
            );
            let cpu = CpuSample::take();
            let mut result = match target.relay() {
                None => measure(env, params, target, rep),
                Some(relay) => {
                    let log = env.dir.join(format!("daemon-{relay}-rep{rep}.log"));
                    daemon_logs.push(log.clone());
                    match Daemon::start(env, Some(relay), &log) {
                        Ok(mut daemon) => {
                            let mut r = measure(env, params, target, rep);
                            r.mesh = Some(daemon.counters());
                            if let Err(e) = daemon.stop() {
                                r.errors.push(format!("stopping the daemon: {e:#}"));
                            }
                            r
                        }
                        Err(e) => RunResult::failed(target, rep, format!("{e:#}")),
                    }
                }
            };
            if let Some(o) = cpu.other_pct() {
                o.insert_into(&mut result.values);
            }
            runs.push(result);
            thread::sleep(Duration::from_millis(500));
        }
    }

    let mut memory = Vec::new();
    for relay in ["splice", "copy"] {
        println!("bench: daemon memory, MESH_RELAY={relay}");
        let log = env.dir.join(format!("daemon-{relay}-memory.log"));
        daemon_logs.push(log.clone());
        let m = measure_memory(env, relay, &log);
        match &m {
            Ok(m) => println!(
                "bench:   idle {:.1} MiB, with {} connections {:.1} MiB, after release {:.1} MiB",
                kib_to_mib(m.idle_kib),
                HOLD_CONNS,
                kib_to_mib(m.held_kib),
                kib_to_mib(m.after_kib)
            ),
            Err(e) => println!("bench:   failed: {e:#}"),
        }
        memory.push((relay, m));
    }
    drop(nginx);
    Ok((runs, memory, nginx_version))
}

// ------------------------------------------------------------------ setup

fn prepare(params: &Params) -> Result<Env> {
    let dir = target_dir().join("bench");
    let release = target_dir().join("release");
    let cgroup_root = cgroup2_mount()?;
    let attach_cgroup = cgroup_root.join(CGROUP_NAME);
    ensure!(
        attach_cgroup != cgroup_root && attach_cgroup.parent() == Some(cgroup_root.as_path()),
        "refusing to attach anywhere but a child cgroup of {}",
        cgroup_root.display()
    );
    let parent_cgroup = attach_cgroup.join("agents");
    let bpffs_dir = PathBuf::from(BPFFS_DIR);

    // sun_path holds 108 bytes; fall back to /run for deep checkouts.
    let mut admin_socket = dir.join("admin.sock");
    if admin_socket.as_os_str().len() >= 100 {
        admin_socket = PathBuf::from("/run/mesh-bench/admin.sock");
    }
    let listen_port = free_port_pair()?;
    let metrics: SocketAddr = SocketAddr::new([127, 0, 0, 1].into(), free_port("127.0.0.1")?);
    let env = Env {
        bench_bin: release.join("mesh-bench"),
        agent_bin: release.join("mesh-agent"),
        meshctl_bin: release.join("meshctl"),
        config: dir.join("config.yaml"),
        data_dir: dir.join("data"),
        admin_socket,
        metrics,
        attach_cgroup,
        parent_cgroup,
        bpffs_dir,
        echo: SocketAddr::new([127, 0, 0, 2].into(), free_port("127.0.0.2")?),
        sink: SocketAddr::new([127, 0, 0, 2].into(), free_port("127.0.0.2")?),
        nginx_echo: SocketAddr::new([127, 0, 0, 3].into(), free_port("127.0.0.3")?),
        nginx_sink: SocketAddr::new([127, 0, 0, 3].into(), free_port("127.0.0.3")?),
        dir,
    };

    // What an interrupted run may have left behind: the daemon's pins and
    // cgroups (by their fixed names). The config is rewritten first so that
    // `mesh-agent cleanup` has one to read.
    std::fs::create_dir_all(&env.dir).with_context(|| format!("create {}", env.dir.display()))?;
    write_config(&env, listen_port)?;
    if env.bpffs_dir.exists() || env.attach_cgroup.exists() {
        println!("bench: removing what a previous run left behind");
        mesh_cleanup(&env);
    }
    let _ = std::fs::remove_dir_all(&env.dir);
    std::fs::create_dir_all(env.dir.join("policies"))
        .with_context(|| format!("create {}", env.dir.display()))?;
    if let Some(sock_dir) = env.admin_socket.parent() {
        std::fs::create_dir_all(sock_dir)
            .with_context(|| format!("create {}", sock_dir.display()))?;
    }
    write_config(&env, listen_port)?;
    std::fs::write(
        env.dir.join("policies").join("bench.yaml"),
        format!(
            "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {AGENT} }}\nagent: {AGENT}\n\
             egress:\n  default: deny\n  allow: [\"127.0.0.2:*\"]\n"
        ),
    )
    .context("write the bench policy")?;
    for bin in [&env.bench_bin, &env.agent_bin, &env.meshctl_bin] {
        ensure!(bin.exists(), "{} missing after the build", bin.display());
    }
    println!(
        "bench: {} repetition(s) of {} s per load; echo {} sink {}, nginx {} / {}, mesh listener port {listen_port}; files in {}",
        params.reps,
        params.seconds,
        env.echo,
        env.sink,
        env.nginx_echo,
        env.nginx_sink,
        env.dir.display()
    );
    Ok(env)
}

fn write_config(env: &Env, listen_port: u16) -> Result<()> {
    let text = format!(
        "# Written by `cargo xtask bench`.\n\
         attach_cgroup: {attach}\n\
         parent_cgroup: {parent}\n\
         bpffs_dir: {bpffs}\n\
         listen: [\"127.0.0.1:{listen_port}\", \"[::1]:{listen_port}\"]\n\
         admin_socket: {admin}\n\
         metrics: \"{metrics}\"\n\
         data_dir: {data}\n\
         policy_dir: {policies}\n",
        attach = yaml_str(&env.attach_cgroup),
        parent = yaml_str(&env.parent_cgroup),
        bpffs = yaml_str(&env.bpffs_dir),
        admin = yaml_str(&env.admin_socket),
        metrics = env.metrics,
        data = yaml_str(&env.data_dir),
        policies = yaml_str(&env.dir.join("policies")),
    );
    std::fs::write(&env.config, text).with_context(|| format!("write {}", env.config.display()))
}

/// A YAML double-quoted scalar.
fn yaml_str(path: &Path) -> String {
    let mut out = String::from("\"");
    for c in path.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn free_port(ip: &str) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))
        .with_context(|| format!("bind {ip}:0"))?
        .local_addr()?
        .port())
}

/// A port free on both 127.0.0.1 and ::1 (the daemon listens on both).
fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let port = free_port("127.0.0.1")?;
        if TcpListener::bind(("::1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both 127.0.0.1 and ::1")
}

fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} is not listening on {addr}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `[setpriv --pdeathsig TERM --] sh -c 'ulimit -n N; exec "$0" "$@"' PROGRAM
/// ARGS…`: the same process (pid) as PROGRAM, with a file descriptor limit fit
/// for 1,000 connections (the hard limit when N is above it and raising it is
/// not permitted, as in containers without CAP_SYS_RESOURCE), and sent
/// SIGTERM if this xtask dies without running its guards (killed from
/// outside), so nothing it started outlives it.
fn with_nofile(program: &Path, args: &[&str]) -> Command {
    let script = format!(
        "ulimit -n {NOFILE} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
    );
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut cmd = if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "TERM", "--", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    cmd.arg("-c").arg(script).arg(program).args(args);
    cmd
}

impl Env {
    fn bench_command(&self, args: &[&str]) -> Command {
        with_nofile(&self.bench_bin, args)
    }

    /// The load tool for `target`: governed through `meshctl exec` for the
    /// mesh targets, a plain process otherwise.
    fn client(&self, target: Target, args: &[&str]) -> Command {
        match target.relay() {
            None => self.bench_command(args),
            Some(_) => self.governed(args),
        }
    }

    /// `meshctl exec --agent bench -- mesh-bench ARGS…`
    fn governed(&self, args: &[&str]) -> Command {
        self.governed_program(&self.bench_bin, args)
    }

    /// `meshctl exec --agent bench -- PROGRAM ARGS…`
    fn governed_program(&self, program: &Path, args: &[&str]) -> Command {
        let socket = self.admin_socket.to_string_lossy().into_owned();
        let program = program.to_string_lossy().into_owned();
        let mut full = vec![
            "--socket", &socket, "exec", "--agent", AGENT, "--", &program,
        ];
        full.extend_from_slice(args);
        with_nofile(&self.meshctl_bin, &full)
    }

    fn echo_for(&self, target: Target) -> SocketAddr {
        if target == Target::Nginx {
            self.nginx_echo
        } else {
            self.echo
        }
    }

    fn sink_for(&self, target: Target) -> SocketAddr {
        if target == Target::Nginx {
            self.nginx_sink
        } else {
            self.sink
        }
    }
}

// ------------------------------------------------------------- processes

/// Sends `signal` to a process this run started (by pid).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A server process, killed (by pid) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {}", display_cmd(&cmd)))?;
        Ok(Proc { name, child })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!("bench: {} had exited early ({status})", self.name);
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An nginx instance with a private config and prefix under
/// target/bench/NAME: a plain stream (L4) proxy in front of the echo and sink
/// servers for the TCP part; the MCP part's backend and HTTP reverse proxy.
struct Nginx {
    master: Child,
    version: String,
}

impl Nginx {
    /// The TCP part's stream proxy, in target/bench/nginx.
    fn start_stream(env: &Env) -> Result<Nginx> {
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let load = if module.exists() {
            format!("load_module {};\n", module.display())
        } else {
            String::new()
        };
        let body = format!(
            "stream {{\n\
             \x20   server {{ listen {le}; proxy_pass {echo}; }}\n\
             \x20   server {{ listen {ls}; proxy_pass {sink}; }}\n\
             }}\n",
            le = env.nginx_echo,
            ls = env.nginx_sink,
            echo = env.echo,
            sink = env.sink,
        );
        Nginx::start(
            env,
            "nginx",
            &load,
            2,
            &body,
            &[env.nginx_echo, env.nginx_sink],
        )
    }

    /// nginx in target/bench/NAME with `workers` worker processes, the
    /// top-level directives `pre` (load_module) and the blocks `body`, ready
    /// when it accepts connections on every address of `listens`.
    fn start(
        env: &Env,
        name: &str,
        pre: &str,
        workers: usize,
        body: &str,
        listens: &[SocketAddr],
    ) -> Result<Nginx> {
        let dir = env.dir.join(name);
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            "# Written by `cargo xtask bench`.\n\
             {pre}daemon off;\n\
             master_process on;\n\
             worker_processes {workers};\n\
             pid {pid};\n\
             error_log {err} warn;\n\
             events {{ worker_connections 8192; }}\n\
             {body}",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("logs/error.log").display(),
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf)?;
        let version = Command::new("nginx")
            .arg("-v")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .and_then(|v| v.strip_prefix("nginx version: ").map(str::to_owned))
            .unwrap_or_else(|| "nginx".into());
        let mut cmd = with_nofile(Path::new("nginx"), &[]);
        // `sh -c … exec "$0" "$@"` with $0 = nginx.
        cmd.arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"));
        let log = std::fs::File::create(dir.join("logs/stderr.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let master = cmd
            .spawn()
            .with_context(|| format!("start nginx: {}", display_cmd(&cmd)))?;
        let mut nginx = Nginx { master, version };
        for &addr in listens {
            if let Err(e) = wait_listening(addr, "nginx") {
                let status = nginx.master.try_wait().ok().flatten();
                let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
                    + &std::fs::read_to_string(dir.join("logs/stderr.log")).unwrap_or_default();
                bail!("{e} (exit: {status:?}):\n{}", tail(&log, 20));
            }
        }
        Ok(nginx)
    }

    /// The master's and the workers' pids.
    fn pids(&self) -> Vec<u32> {
        let pid = self.master.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|w| w.parse().ok()))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.master.id();
        // The workers are the master's children; keep their pids in case the
        // master has to be killed (they would outlive it).
        let workers =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if crate::util::terminate(&mut self.master, Duration::from_secs(10)).is_none() {
            eprintln!("bench: nginx did not exit");
        }
        for w in workers.split_whitespace() {
            if let Ok(w) = w.parse::<u32>() {
                if Path::new(&format!("/proc/{w}")).exists() {
                    signal(w, "KILL");
                }
            }
        }
    }
}

/// `mesh-agent cleanup`, the pin directory, the cgroups (and anything left
/// in them). Idempotent.
fn mesh_cleanup(env: &Env) {
    let _ = Command::new(&env.agent_bin)
        .args(["cleanup", "--config"])
        .arg(&env.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if env.bpffs_dir.exists() {
        let _ = std::fs::remove_dir_all(&env.bpffs_dir);
    }
    crate::util::remove_cgroup_tree(&env.attach_cgroup);
}

/// One mesh-agent, stopped and cleaned up (pins, cgroups) when dropped.
struct Daemon<'a> {
    env: &'a Env,
    child: Option<Child>,
    log: PathBuf,
}

impl<'a> Daemon<'a> {
    /// A fresh daemon, with `MESH_RELAY=relay` when given (the default
    /// strategy otherwise).
    fn start(env: &'a Env, relay: Option<&str>, log: &Path) -> Result<Daemon<'a>> {
        mesh_cleanup(env);
        let _ = std::fs::remove_dir_all(&env.data_dir);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let config = env.config.to_string_lossy().into_owned();
        let mut cmd = with_nofile(&env.agent_bin, &["run", "--config", &config]);
        if let Some(relay) = relay {
            cmd.env("MESH_RELAY", relay);
        }
        cmd.env("RUST_LOG", daemon_rust_log())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", display_cmd(&cmd)))?;
        let mut daemon = Daemon {
            env,
            child: Some(child),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "mesh-agent exited early ({status}); {}:\n{}",
                    log.display(),
                    tail(&daemon.log_text(), 30)
                );
            }
            // hyper answers an HTTP/1.0 request with an HTTP/1.0 status line.
            if http_get(env.metrics, "/readyz")
                .is_some_and(|r| r.split_whitespace().nth(1) == Some("200"))
            {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                bail!(
                    "mesh-agent not ready after 60 s; {}:\n{}",
                    log.display(),
                    tail(&daemon.log_text(), 30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connections the daemon counted for the bench agent, by decision.
    fn counters(&self) -> MeshCounters {
        // A connection's record is written when its relay ends, a moment
        // after the client has exited.
        thread::sleep(Duration::from_millis(300));
        let text = http_get(self.env.metrics, "/metrics").unwrap_or_default();
        let mut c = MeshCounters::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("mesh_requests_total{") else {
                continue;
            };
            if !rest.contains(&format!("agent=\"{AGENT}\"")) {
                continue;
            }
            let value: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as u64);
            if rest.contains("decision=\"allow\"") {
                c.allowed += value;
            } else if rest.contains("decision=\"refuse\"") {
                c.refused += value;
            } else {
                c.errors += value;
            }
        }
        c
    }

    /// SIGTERM (drain), then cleanup.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = crate::util::terminate(&mut child, Duration::from_secs(40));
        mesh_cleanup(self.env);
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("mesh-agent exited with {s}"),
            None => bail!("mesh-agent could not be reaped"),
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The daemon's `RUST_LOG`: `info` (each record logged, as deployed), or
/// `MESH_BENCH_RUST_LOG` for diagnosis.
fn daemon_rust_log() -> String {
    std::env::var("MESH_BENCH_RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "info".into())
}

/// Settings of this run that change the daemon from its defaults, for the
/// document: `MESH_BENCH_RUST_LOG`, and `MESH_WORKER_THREADS` (read by the
/// daemon itself, inherited from this process).
fn daemon_overrides() -> Vec<String> {
    ["MESH_BENCH_RUST_LOG", "MESH_WORKER_THREADS"]
        .iter()
        .filter_map(|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
            Some(format!("`{k}={v}`"))
        })
        .collect()
}

/// Plain HTTP/1.0 GET (ungoverned).
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a client to completion (killing it, and for governed clients the
/// agents' cgroups, after `timeout`) and parses the flat JSON line it prints.
fn run_client(env: &Env, cmd: Command, timeout: Duration) -> Result<BTreeMap<String, f64>> {
    let (shown, stdout, stderr) = run_process(env, cmd, timeout)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| {
            format!("no result from {shown}; stdout: {stdout:?}, stderr: {stderr:?}")
        })?;
    parse_flat_json(line)
}

/// Runs a client to completion (killing it, and for governed clients the
/// agents' cgroups, after `timeout`); its command line, stdout and stderr
/// when it succeeded.
fn run_process(env: &Env, mut cmd: Command, timeout: Duration) -> Result<(String, String, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = display_cmd(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A governed client is meshctl's child, in a cgroup below ours.
            if env.parent_cgroup.exists() {
                let _ = std::fs::write(env.parent_cgroup.join("cgroup.kill"), "1");
            }
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        None => bail!(
            "timed out after {} s: {shown}\n{}",
            timeout.as_secs(),
            tail(&stderr, 10)
        ),
        Some(s) if !s.success() => bail!("{shown} failed ({s}):\n{}", tail(&stderr, 10)),
        Some(_) => {}
    }
    Ok((shown, stdout, stderr))
}

fn reader<R: std::io::Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// `{"a":1,"b":2.5}` (what mesh-bench prints: flat, numbers only).
fn parse_flat_json(line: &str) -> Result<BTreeMap<String, f64>> {
    let inner = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .with_context(|| format!("not a JSON object: {line}"))?;
    let mut map = BTreeMap::new();
    for field in inner.split(',').filter(|f| !f.trim().is_empty()) {
        let (k, v) = field
            .split_once(':')
            .with_context(|| format!("bad field {field:?} in {line}"))?;
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("bad number in {field:?}"))?;
        map.insert(k.trim().trim_matches('"').to_owned(), v);
    }
    Ok(map)
}

// ----------------------------------------------------------- measurements

#[derive(Default, Clone, Copy)]
struct MeshCounters {
    allowed: u64,
    refused: u64,
    errors: u64,
}

struct RunResult {
    target: Target,
    rep: usize,
    /// connect_p50, connect_p99, rr_p50, rr_p99, max_rps, mbps, …
    values: BTreeMap<&'static str, f64>,
    errors: Vec<String>,
    mesh: Option<MeshCounters>,
}

impl RunResult {
    fn failed(target: Target, rep: usize, error: String) -> RunResult {
        println!("bench:   failed: {error}");
        RunResult {
            target,
            rep,
            values: BTreeMap::new(),
            errors: vec![error],
            mesh: None,
        }
    }
}

fn measure(env: &Env, params: &Params, target: Target, rep: usize) -> RunResult {
    let mut r = RunResult {
        target,
        rep,
        values: BTreeMap::new(),
        errors: Vec::new(),
        mesh: None,
    };
    let echo = env.echo_for(target).to_string();
    let sink = env.sink_for(target).to_string();
    let secs = params.seconds.to_string();
    let timeout = Duration::from_secs(params.seconds + 60);
    let count = CONNECT_COUNT.to_string();
    let size = REQUEST_SIZE.to_string();
    let (paced_conns, max_conns, tp_conns, rate) = (
        PACED_CONNS.to_string(),
        MAX_CONNS.to_string(),
        THROUGHPUT_CONNS.to_string(),
        PACED_RATE.to_string(),
    );

    let mut step = |what: &str, args: &[&str], keys: &[(&'static str, &str)]| match run_client(
        env,
        env.client(target, args),
        timeout,
    ) {
        Ok(v) => {
            let mut shown = Vec::new();
            for (name, key) in keys {
                if let Some(x) = v.get(*key) {
                    r.values.insert(name, *x);
                    shown.push(format!("{name} {}", fmt_num(*x)));
                } else {
                    r.errors.push(format!("{what}: no {key} in the result"));
                }
            }
            if v.get("errors").is_some_and(|e| *e > 0.0) {
                r.errors
                    .push(format!("{what}: {} connects failed", v["errors"]));
            }
            println!("bench:   {what}: {}", shown.join(", "));
        }
        Err(e) => {
            println!("bench:   {what} failed: {e:#}");
            r.errors.push(format!("{what}: {e:#}"));
        }
    };
    step(
        "connect",
        &["connect", "--addr", &echo, "--count", &count],
        &[("connect_p50", "p50_us"), ("connect_p99", "p99_us")],
    );
    step(
        "rr @1k rps",
        &[
            "rr",
            "--addr",
            &echo,
            "--size",
            &size,
            "--conns",
            &paced_conns,
            "--rate",
            &rate,
            "--duration",
            &secs,
        ],
        &[
            ("rr_p50", "p50_us"),
            ("rr_p99", "p99_us"),
            ("rr_rps", "rps"),
            ("send_lag_p99", "send_lag_p99_us"),
        ],
    );
    step(
        "rr max",
        &[
            "rr",
            "--addr",
            &echo,
            "--size",
            &size,
            "--conns",
            &max_conns,
            "--rate",
            "0",
            "--duration",
            &secs,
        ],
        &[
            ("max_rps", "rps"),
            ("max_p50", "p50_us"),
            ("max_p99", "p99_us"),
        ],
    );
    step(
        "throughput",
        &[
            "throughput",
            "--addr",
            &sink,
            "--conns",
            &tp_conns,
            "--duration",
            &secs,
        ],
        &[("mbps", "mb_per_s")],
    );
    r
}

struct Memory {
    idle_kib: u64,
    held_kib: u64,
    held_hwm_kib: u64,
    after_kib: u64,
    active: Option<u64>,
    open_ms: f64,
}

/// VmRSS and VmHWM (KiB) from /proc/PID/status.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Ok((
        field("VmRSS:").context("no VmRSS")?,
        field("VmHWM:").unwrap_or(0),
    ))
}

fn measure_memory(env: &Env, relay: &str, log: &Path) -> Result<Memory> {
    let daemon = Daemon::start(env, Some(relay), log)?;
    let pid = daemon.pid().context("daemon pid")?;
    thread::sleep(Duration::from_secs(2));
    let (idle_kib, _) = rss(pid)?;

    let echo = env.echo.to_string();
    let conns = HOLD_CONNS.to_string();
    let mut cmd = env.governed(&["hold", "--addr", &echo, "--conns", &conns]);
    let err_log = env.dir.join(format!("hold-{relay}.log"));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_log)?);
    let shown = display_cmd(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("hold stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.trim() == "ready" => break Ok(()),
            Ok(_) => continue,
            Err(_) => break Err(()),
        }
    };
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let result = match ready {
        Ok(()) => {
            thread::sleep(Duration::from_secs(1));
            let (held_kib, held_hwm_kib) = rss(pid)?;
            let active = meshctl_active_connections(env);
            Ok((held_kib, held_hwm_kib, active))
        }
        Err(()) => Err(anyhow::anyhow!(
            "`{shown}` did not report ready: {}",
            tail(&std::fs::read_to_string(&err_log).unwrap_or_default(), 10)
        )),
    };
    // Closing stdin releases the connections.
    drop(stdin);
    if crate::util::wait_or_kill(&mut child, Duration::from_secs(30)).is_none()
        && env.parent_cgroup.exists()
    {
        let _ = std::fs::write(env.parent_cgroup.join("cgroup.kill"), "1");
    }
    let (held_kib, held_hwm_kib, active) = result?;
    thread::sleep(Duration::from_secs(2));
    let (after_kib, _) = rss(pid)?;
    drop(daemon);
    Ok(Memory {
        idle_kib,
        held_kib,
        held_hwm_kib,
        after_kib,
        active,
        open_ms,
    })
}

/// `active_connections` from `meshctl --output json status`.
fn meshctl_active_connections(env: &Env) -> Option<u64> {
    let out = Command::new(&env.meshctl_bin)
        .arg("--socket")
        .arg(&env.admin_socket)
        .args(["--output", "json", "status"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = &text[text.find("\"active_connections\"")? + "\"active_connections\"".len()..];
    let digits: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// WARN and ERROR lines of the daemon logs, by message (timestamps cut), in
/// order of first appearance.
struct LogScan {
    lines: usize,
    distinct: Vec<(String, usize)>,
}

fn scan_daemon_logs(logs: &[PathBuf]) -> LogScan {
    let mut scan = LogScan {
        lines: 0,
        distinct: Vec::new(),
    };
    for log in logs {
        // The MCP part's logs hold a record line per call: read line by line.
        let Ok(file) = std::fs::File::open(log) else {
            continue;
        };
        for line in BufReader::new(file).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            if !line.contains("WARN")
                && !line.contains("ERROR")
                && !line.contains("error:")
                && !line.contains("panicked")
            {
                continue;
            }
            let clean = strip_ansi(&line);
            let level = [" WARN ", " ERROR ", "error:", "panicked"]
                .iter()
                .find_map(|l| clean.find(l));
            let Some(at) = level else { continue };
            scan.lines += 1;
            let message = clean[at..].trim().to_owned();
            match scan.distinct.iter_mut().find(|(m, _)| *m == message) {
                Some((_, n)) => *n += 1,
                None => scan.distinct.push((message, 1)),
            }
        }
    }
    scan
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ----------------------------------------------------------------- report

struct Report<'a> {
    params: &'a Params,
    env: &'a Env,
    tcp: Option<&'a TcpPart>,
    mcp: Option<&'a mcp::McpPart>,
    policy: Option<&'a policy::PolicyPart>,
    budget: Option<&'a budget::BudgetPart>,
    logs: &'a LogScan,
    elapsed: Duration,
    load_at_start: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl TcpPart {
    fn median(&self, target: Target, key: &str) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter(|r| r.target == target)
                .filter_map(|r| r.values.get(key).copied())
                .collect(),
        )
    }
}

fn fmt_num(x: f64) -> String {
    if x >= 10_000.0 {
        // thousands separators
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), fmt_num)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    (cpu, nproc, kernel)
}

fn render(rep: &Report) -> String {
    let mut d = String::new();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let (cpu, nproc, kernel) = machine();
    let git = command_line(
        "git",
        &[
            "-C",
            &repo_root().to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = !command_line(
        "git",
        &[
            "-C",
            &repo_root().to_string_lossy(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    let p = rep.params;

    let _ = writeln!(d, "# Benchmarks\n");
    let parts: Vec<String> = [
        rep.tcp.map(|t| {
            format!(
                "[opaque TCP](#opaque-tcp) {:.1} min",
                t.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.mcp.map(|m| {
            format!(
                "[MCP tools/call](#mcp-toolscall) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.policy.map(|m| {
            format!(
                "[policy decisions](#policy-decisions) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.budget.map(|m| {
            format!(
                "[budgets](#budgets) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    let _ = writeln!(
        d,
        "Written by `cargo xtask bench` on {date} ({:.1} min: {}); every number below comes from that one run. \
         Re-run it to refresh this file; do not edit the numbers by hand.\n",
        rep.elapsed.as_secs_f64() / 60.0,
        parts.join(", ")
    );
    if let Some(only) = p.only {
        let _ = writeln!(
            d,
            "**Partial run** (`MESH_BENCH_ONLY={}`): only that part was measured.\n",
            only.name()
        );
    }
    let overrides = daemon_overrides();
    if !overrides.is_empty() {
        let _ = writeln!(
            d,
            "**Diagnostic run** ({}): the daemon did not run with the settings the method below states.\n",
            overrides.join(", ")
        );
    }
    if !p.is_default() {
        let _ = writeln!(
            d,
            "**Shortened run** (`MESH_BENCH_REPS={}`, `MESH_BENCH_SECONDS={}`): not the standard method below.\n",
            p.reps, p.seconds
        );
    }
    let _ = writeln!(d, "## Machine\n");
    let _ = writeln!(d, "- CPU: {cpu}, {nproc} logical CPUs (`nproc`)");
    let _ = writeln!(d, "- kernel: {kernel}");
    let _ = writeln!(
        d,
        "- load average (1, 5, 15 min) when the run started: {} (while it runs, the run itself keeps it \
         near 2 or above; other work on the machine shares the CPUs)",
        rep.load_at_start,
    );
    let other: Vec<String> = [
        rep.tcp
            .and_then(|t| t.other_cpu)
            .map(|o| format!("opaque TCP part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.mcp
            .and_then(|m| m.other_cpu)
            .map(|o| format!("MCP part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.policy
            .and_then(|m| m.other_cpu)
            .map(|o| format!("policy part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.budget
            .and_then(|m| m.other_cpu)
            .map(|o| format!("budget part {:.1}% / {:.1}%", o.other, o.steal)),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Only the TCP and MCP parts have per-measurement columns and daemons.
    let daemon_parts = rep.tcp.is_some() || rep.mcp.is_some();
    if !other.is_empty() {
        let _ = writeln!(
            d,
            "- CPU taken by other work while the run lasted, in % of all {nproc} CPUs: inside this machine \
             (its user + system time from /proc/stat, less this run's processes and kernel threads) / by \
             the hypervisor for others (steal time): {}{}",
            other.join(", "),
            if daemon_parts {
                "; per measurement in the \"other CPU / steal %\" columns below"
            } else {
                ""
            }
        );
    }
    if let Some(v) = rep
        .tcp
        .map(|t| t.nginx_version.as_str())
        .or(rep.mcp.map(|m| m.nginx_version.as_str()))
    {
        let _ = writeln!(d, "- nginx: {v}");
    }
    let _ = writeln!(
        d,
        "- mesh: commit {}{}, release build",
        if git.is_empty() { "unknown" } else { &git },
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(d);

    if let Some(tcp) = rep.tcp {
        render_tcp(&mut d, p, nproc, tcp);
    }
    if let Some(m) = rep.mcp {
        mcp::render(&mut d, p, nproc, m);
    }
    if let Some(m) = rep.policy {
        policy::render(&mut d, m);
    }
    if let Some(m) = rep.budget {
        budget::render(&mut d, m);
    }

    // Daemon logs (only the TCP and MCP parts start daemons) and problems.
    if daemon_parts {
        let _ = writeln!(d, "## Daemon log\n");
        if rep.logs.lines == 0 {
            let _ = writeln!(d, "No warnings or errors in the daemon logs of this run.\n");
        } else {
            let _ = writeln!(
                d,
                "{} warning/error lines in the daemon logs of this run ({} distinct):\n",
                rep.logs.lines,
                rep.logs.distinct.len()
            );
            for (msg, n) in rep.logs.distinct.iter().take(15) {
                let msg: String = msg.chars().take(300).collect();
                let _ = writeln!(d, "- {n}× `{}`", msg.replace('`', "'"));
            }
            let _ = writeln!(d);
        }
    }
    let no_runs: &[RunResult] = &[];
    let no_memory: &MemoryResults = &Vec::new();
    let (runs, memory) = rep
        .tcp
        .map_or((no_runs, no_memory), |t| (&t.runs[..], &t.memory));
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("rep {} {}: {e}", r.rep, r.target.label()))
        })
        .chain(runs.iter().filter_map(|r| {
            r.mesh
                .filter(|c| c.refused + c.errors > 0 || c.allowed == 0)
                .map(|c| {
                    format!(
                        "rep {} {}: the daemon counted {} allowed, {} refused, {} failed connections",
                        r.rep,
                        r.target.label(),
                        c.allowed,
                        c.refused,
                        c.errors
                    )
                })
        }))
        .chain(
            memory
                .iter()
                .filter_map(|(relay, m)| m.as_ref().err().map(|e| format!("memory ({relay}): {e:#}"))),
        )
        .chain(rep.mcp.map(mcp::McpPart::problems).unwrap_or_default())
        .chain(rep.policy.map(policy::PolicyPart::problems).unwrap_or_default())
        .chain(rep.budget.map(budget::BudgetPart::problems).unwrap_or_default())
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(d, "## Problems\n");
        for p in problems {
            let p: String = p.chars().take(600).collect();
            let _ = writeln!(d, "- {}", p.replace('\n', " "));
        }
        let _ = writeln!(d);
    }
    let _ = writeln!(
        d,
        "Logs of this run ({}) were in `{}`.",
        [
            daemon_parts.then_some("daemon, nginx, servers"),
            rep.policy.map(|_| "policy benchmark and test output"),
            rep.budget.map(|_| "budget benchmark output"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; "),
        rep.env
            .dir
            .strip_prefix(repo_root())
            .unwrap_or(&rep.env.dir)
            .display()
    );
    d
}

/// The opaque TCP part of the document.
fn render_tcp(d: &mut String, p: &Params, nproc: usize, tcp: &TcpPart) {
    let _ = writeln!(d, "## Opaque TCP\n");
    let _ = writeln!(d, "### Method\n");
    let _ = writeln!(
        d,
        "One load tool for every target, `mesh-bench` (`benches/`), against its own echo and sink servers \
         on 127.0.0.2 (tokio). Targets:\n\n\
         - **direct**: the client connects to the servers itself, ungoverned;\n\
         - **nginx**: {} as a plain stream (L4) proxy on 127.0.0.3 (`worker_processes 2`, \
         `proxy_pass` to the servers, no other tuning), client ungoverned;\n\
         - **mesh (splice)** / **mesh (copy)**: the client runs governed, \
         `meshctl exec --agent {AGENT} -- mesh-bench …`, and connects to the servers' addresses; the kernel \
         redirects each connect to mesh-agent (release build, `RUST_LOG=info`), which applies the egress \
         policy (`allow: [\"127.0.0.2:*\"]`) and relays to the original destination, with \
         `MESH_RELAY=splice` (splice(2) through pipes) or `MESH_RELAY=copy` (user-space buffers). \
         The daemon is started fresh for each measurement set.\n",
        tcp.nginx_version
    );
    let _ = writeln!(
        d,
        "Loads, in this order for each target:\n\n\
         1. **connect**: {CONNECT_COUNT} sequential `connect()` + close; the time of `connect()` alone. \
         Governed for mesh, so this is the cost of the kernel redirect (plus the listener's handshake).\n\
         2. **rr @1k rps**: {PACED_CONNS} persistent connections, {REQUEST_SIZE}-byte request, wait for the \
         full {REQUEST_SIZE}-byte echo; a fixed aggregate {PACED_RATE} requests/s for {s} s, open loop. \
         Latency counts from the scheduled send time whenever the previous answer on that connection \
         arrived after it (no coordinated omission), otherwise from the actual send (the tool's own timer \
         wake-up is not the target's latency).\n\
         3. **max req/s**: the same exchange on {MAX_CONNS} connections, as fast as possible, {s} s.\n\
         4. **MB/s**: {THROUGHPUT_CONNS} connections writing 256 KiB chunks to the sink as fast as possible \
         for {s} s (MB = 10^6 bytes).\n\n\
         Targets run interleaved (direct, nginx, mesh splice, mesh copy; again …), {reps} \
         repetition{plural}; the table shows medians. Nothing is pinned: client, proxy and servers share the {nproc} CPUs the \
         same way for every target, all on loopback. Then, with each relay strategy, the daemon's resident \
         memory (VmRSS from /proc/PID/status) idle, 2 s after it is ready, and while a governed \
         `mesh-bench hold` keeps {HOLD_CONNS} connections open through it (a 1-byte echo on each, so each \
         is proxied end to end).\n",
        s = p.seconds,
        reps = p.reps,
        plural = if p.reps == 1 { "" } else { "s" },
    );

    // Main table.
    let _ = writeln!(
        d,
        "### Results (median of {} repetition{})\n",
        p.reps,
        if p.reps == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        d,
        "| target | connect p50 / p99 µs | rr p50 / p99 µs @1k rps | max req/s | MB/s | vs direct |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|");
    let direct_p50 = tcp.median(Target::Direct, "rr_p50");
    let direct_rps = tcp.median(Target::Direct, "max_rps");
    let direct_mbps = tcp.median(Target::Direct, "mbps");
    let direct_connect = tcp.median(Target::Direct, "connect_p50");
    for t in TARGETS {
        let m = |k| tcp.median(t, k);
        let vs = if t == Target::Direct {
            "1.00x".to_owned()
        } else {
            let r = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |x| format!("{x:.2}x"));
            format!(
                "connect p50 {}, rr p50 {}, req/s {}, MB/s {}",
                r(ratio(m("connect_p50"), direct_connect)),
                r(ratio(m("rr_p50"), direct_p50)),
                r(ratio(m("max_rps"), direct_rps)),
                r(ratio(m("mbps"), direct_mbps)),
            )
        };
        let _ = writeln!(
            d,
            "| {} | {} / {} | {} / {} | {} | {} | {} |",
            t.label(),
            opt(m("connect_p50")),
            opt(m("connect_p99")),
            opt(m("rr_p50")),
            opt(m("rr_p99")),
            opt(m("max_rps")),
            opt(m("mbps")),
            vs
        );
    }
    let _ = writeln!(
        d,
        "\n\"vs direct\": latency as a multiple of direct's (lower is better), req/s and MB/s as a fraction \
         of direct's (higher is better).\n"
    );

    // Memory.
    let _ = writeln!(d, "### mesh-agent memory\n");
    for (relay, m) in &tcp.memory {
        match m {
            Ok(m) => {
                let _ = writeln!(
                    d,
                    "- `MESH_RELAY={relay}`: idle **{:.1} MiB**; with {HOLD_CONNS} concurrent proxied connections \
                     **{:.1} MiB** (peak {:.1} MiB; the daemon reported {} active connections; opening them took \
                     {:.0} ms); {:.1} MiB 2 s after they closed.",
                    kib_to_mib(m.idle_kib),
                    kib_to_mib(m.held_kib),
                    kib_to_mib(m.held_hwm_kib),
                    m.active.map_or_else(|| "n/a".into(), |a| a.to_string()),
                    m.open_ms,
                    kib_to_mib(m.after_kib),
                );
            }
            Err(e) => {
                let _ = writeln!(d, "- `MESH_RELAY={relay}`: failed: {e:#}");
            }
        }
    }
    let _ = writeln!(
        d,
        "\nVmRSS counts the daemon's own pages; the kernel's socket and pipe buffers are not in it.\n"
    );

    // Targets of the issue.
    targets::write_header(d);
    let verdict = targets::verdict;
    let nginx_mbps = tcp.median(Target::Nginx, "mbps");
    for t in [Target::MeshSplice, Target::MeshCopy] {
        let f = ratio(tcp.median(t, "rr_p50"), direct_p50);
        let _ = writeln!(
            d,
            "| {}: rr p50 within {P50_FACTOR_TARGET}x of direct | {} µs vs {} µs = {} | {} |",
            t.label(),
            opt(tcp.median(t, "rr_p50")),
            opt(direct_p50),
            f.map_or_else(|| "n/a".into(), |f| format!("{f:.2}x")),
            verdict(f.map(|f| f <= P50_FACTOR_TARGET)),
        );
    }
    for t in [Target::MeshSplice, Target::MeshCopy] {
        let mbps = tcp.median(t, "mbps");
        let _ = writeln!(
            d,
            "| {}: throughput at least nginx's | {} MB/s vs {} MB/s | {} |",
            t.label(),
            opt(mbps),
            opt(nginx_mbps),
            verdict(mbps.zip(nginx_mbps).map(|(m, n)| m >= n)),
        );
    }
    for (relay, m) in &tcp.memory {
        let held = m.as_ref().ok().map(|m| kib_to_mib(m.held_kib));
        let _ = writeln!(
            d,
            "| mesh ({relay}): RSS with {HOLD_CONNS} connections under {RSS_TARGET_MIB:.0} MiB | {} | {} |",
            held.map_or_else(|| "n/a".into(), |h| format!("{h:.1} MiB")),
            verdict(held.map(|h| h < RSS_TARGET_MIB)),
        );
    }
    let added: Vec<String> = [Target::Nginx, Target::MeshSplice, Target::MeshCopy]
        .iter()
        .filter_map(|&t| {
            let a = tcp.median(t, "rr_p50")? - direct_p50?;
            Some(format!("{} {a:+.0} µs", t.label()))
        })
        .collect();
    if !added.is_empty() {
        let _ = writeln!(
            d,
            "\nFor comparison, rr p50 added over direct @1k rps: {}.",
            added.join(", ")
        );
    }
    let _ = writeln!(d);

    // Relay strategy.
    let _ = writeln!(d, "### Relay strategy: splice or copy\n");
    let mut wins = (0, 0);
    let compare = [
        ("rr p50 @1k rps", "rr_p50", false),
        ("rr p99 @1k rps", "rr_p99", false),
        ("max req/s", "max_rps", true),
        ("MB/s", "mbps", true),
    ];
    for (name, key, higher) in compare {
        let (s, c) = (
            tcp.median(Target::MeshSplice, key),
            tcp.median(Target::MeshCopy, key),
        );
        let line = match (s, c) {
            (Some(s), Some(c)) => {
                let (better, worse, who) = if (s > c) == higher {
                    (s, c, "splice")
                } else {
                    (c, s, "copy")
                };
                let diff = (better - worse).abs() / worse.max(f64::MIN_POSITIVE);
                if diff < 0.03 {
                    format!(
                        "{name}: splice {} vs copy {}: within 3%, a tie",
                        fmt_num(s),
                        fmt_num(c)
                    )
                } else {
                    if who == "splice" {
                        wins.0 += 1;
                    } else {
                        wins.1 += 1;
                    }
                    format!(
                        "{name}: splice {} vs copy {}: **{who}** better by {:.0}%",
                        fmt_num(s),
                        fmt_num(c),
                        diff * 100.0
                    )
                }
            }
            _ => format!("{name}: not measured"),
        };
        let _ = writeln!(d, "- {line}");
    }
    let held = |relay: &str| {
        tcp.memory
            .iter()
            .find(|(r, _)| *r == relay)
            .and_then(|(_, m)| m.as_ref().ok())
            .map(|m| kib_to_mib(m.held_kib))
    };
    if let (Some(s), Some(c)) = (held("splice"), held("copy")) {
        let _ = writeln!(
            d,
            "- RSS with {HOLD_CONNS} connections: splice {s:.1} MiB vs copy {c:.1} MiB"
        );
    }
    let conclusion = match wins {
        (s, c) if s > c => {
            format!("**splice** was faster in this run ({s} of 4 comparisons against {c}).")
        }
        (s, c) if c > s => {
            format!("**copy** was faster in this run ({c} of 4 comparisons against {s}).")
        }
        _ => "Neither strategy was clearly faster in this run.".to_owned(),
    };
    let _ = writeln!(d, "\n{conclusion}\n");

    // Raw repetitions.
    let _ = writeln!(d, "### Every repetition\n");
    let _ = writeln!(
        d,
        "| rep | target | connect p50 / p99 µs | rr p50 / p99 µs @1k rps | rr req/s achieved | client send lag p99 µs | max req/s (p50 / p99 µs) | MB/s | daemon: connections allowed / refused / error | other CPU / steal % |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &tcp.runs {
        let g = |k: &str| opt(r.values.get(k).copied());
        let counters = r.mesh.map_or_else(
            || "".to_owned(),
            |c| format!("{} / {} / {}", c.allowed, c.refused, c.errors),
        );
        let _ = writeln!(
            d,
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} ({} / {}) | {} | {} | {} |",
            r.rep,
            r.target.label(),
            g("connect_p50"),
            g("connect_p99"),
            g("rr_p50"),
            g("rr_p99"),
            g("rr_rps"),
            g("send_lag_p99"),
            g("max_rps"),
            g("max_p50"),
            g("max_p99"),
            g("mbps"),
            counters,
            OtherCpu::from_values(&r.values),
        );
    }
    let _ = writeln!(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_json() {
        let m =
            parse_flat_json(r#"{"count":2000,"errors":0,"p50_us":27.0,"p99_us":449.9}"#).unwrap();
        assert_eq!(m["count"], 2000.0);
        assert_eq!(m["p99_us"], 449.9);
        assert!(parse_flat_json("ready").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_num(71567.4), "71,567");
        assert_eq!(fmt_num(123456789.0), "123,456,789");
        assert_eq!(fmt_num(159.2), "159");
        assert_eq!(fmt_num(7.25), "7.2");
    }
}
