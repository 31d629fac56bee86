//! `cargo xtask demo`: the foundation, shown to a newcomer. Builds, starts
//! mesh-agent attached to its own parent cgroup (`<cgroup2>/mesh-demo`, never
//! the cgroup root) with the example policy in `policies/`, runs unmodified
//! clients as agent `demo` against a local server, quarantines the agent in
//! the kernel, releases it, and cleans everything up (also on failure).
use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use mesh_testbed::{
    preferred_port, run_command, terminate, wait_or_kill, Daemon, DaemonConfig, DaemonOptions,
    Footprint, StartError,
};

use crate::{
    setup::{ensure_setup, Want},
    util::{cargo, cgroup2_mount, ensure_bpffs, is_root, repo_root, run, target_dir},
};

/// The example policy lets agent `demo` reach this server (policies/demo.yaml).
const SERVER_IP: &str = "127.0.0.2";
const SERVER_PORT: u16 = 8080;
/// Not in the agent's egress allow list.
const FORBIDDEN_PORT: u16 = 8081;
/// The demo's MCP server (the official Python SDK's, from tests/peers);
/// policies/demo.yaml allows it.
const MCP_IP: &str = "127.0.0.3";
const MCP_PORT: u16 = 8765;

struct Demo {
    dir: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    /// What the daemon leaves behind, removed last.
    footprint: Footprint,
    /// The web server, stopped after the daemon.
    server: Option<Child>,
    daemon: Option<Daemon>,
    /// Started after the daemon, stopped before it (last first).
    children: Vec<Child>,
    /// `meshctl exec` of the long-running agent: it ends by itself once the
    /// stop file exists, and then hands its cgroup back.
    agent: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("stop"), "");
        if let Some(mut agent) = self.agent.take() {
            wait_or_kill(&mut agent, Duration::from_secs(10));
        }
        for child in self.children.iter_mut().rev() {
            terminate(child, Duration::from_secs(10));
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        if let Some(mut server) = self.server.take() {
            terminate(&mut server, Duration::from_secs(10));
        }
        self.footprint.remove();
    }
}

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m==> {n}. {text}\x1b[0m");
}

fn say(text: &str) {
    println!("    {text}");
}

fn show(cmd: &mut Command) -> Result<std::process::Output> {
    let shown: Vec<String> = std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let shown = shown
        .join(" ")
        .replace(&format!("{}/", target_dir().join("debug").display()), "");
    println!("    $ {shown}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("      {line}");
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("      {line}");
    }
    println!("    (exit code {})", out.status.code().unwrap_or(-1));
    Ok(out)
}

/// Waits (bounded) until something accepts on `ip:port`.
fn wait_port(ip: &str, port: u16) -> bool {
    for _ in 0..100 {
        if std::net::TcpStream::connect((ip, port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

pub fn demo() -> Result<ExitCode> {
    if !is_root() {
        bail!("cargo xtask demo must run as root (it loads eBPF programs and manages cgroups)");
    }
    ensure_setup(Want { bench: false })?;
    ensure_bpffs()?;
    run(cargo().args(["build", "-p", "mesh-agent"]))?;
    if TcpListener::bind((SERVER_IP, SERVER_PORT)).is_err() {
        bail!("{SERVER_IP}:{SERVER_PORT} is in use; the demo's server needs it (policies/demo.yaml allows it)");
    }
    if TcpListener::bind((MCP_IP, MCP_PORT)).is_err() {
        bail!("{MCP_IP}:{MCP_PORT} is in use; the demo's MCP server needs it (policies/demo.yaml allows it)");
    }

    let cgroup_root = cgroup2_mount()?;
    let attach = cgroup_root.join("mesh-demo");
    assert_ne!(attach, cgroup_root, "never attach to the cgroup root");
    let dir = target_dir().join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::write(
        dir.join("www/index.html"),
        "Hello from the demo server on 127.0.0.2:8080\n",
    )?;
    let listen_port = preferred_port(15001);
    let metrics: SocketAddr = format!("127.0.0.1:{}", preferred_port(9464)).parse()?;
    let bin = target_dir().join("debug");
    let config = dir.join("config.yaml");
    let bpffs = PathBuf::from("/sys/fs/bpf/mesh-demo");
    let mut demo = Demo {
        footprint: Footprint {
            agent_bin: bin.join("mesh-agent"),
            config: config.clone(),
            bpffs_dir: bpffs.clone(),
            attach_cgroup: attach.clone(),
            show_output: true,
        },
        bin,
        config,
        socket: dir.join("admin.sock"),
        dir: dir.clone(),
        server: None,
        daemon: None,
        children: Vec::new(),
        agent: None,
    };
    DaemonConfig {
        header: Vec::new(),
        cgroup_root: None,
        attach_cgroup: attach.clone(),
        parent_cgroup: attach.join("agents"),
        bpffs_dir: bpffs,
        listen_port,
        admin_socket: demo.socket.clone(),
        admin_groups: None,
        metrics,
        data_dir: dir.join("data"),
        policy_dir: repo_root().join("policies"),
    }
    .write(&demo.config)?;
    let meshctl = |args: &[&str]| {
        let mut c = Command::new(demo.bin.join("meshctl"));
        c.arg("--socket").arg(&demo.socket).args(args);
        c
    };
    let url = format!("http://{SERVER_IP}:{SERVER_PORT}/");

    println!("mesh demo: an unmodified program, run as agent `demo`, is carried through");
    println!("mesh-agent by eBPF; the daemon knows from the kernel who it is, enforces the");
    println!("agent's egress policy (policies/demo.yaml) and can quarantine it in the kernel.");

    step(
        1,
        "Start a plain web server on 127.0.0.2:8080 (stands in for a remote API)",
    );
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            SERVER_IP,
            &SERVER_PORT.to_string(),
            "--directory",
        ])
        .arg(dir.join("www"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    demo.server = Some(server);
    say("python3 -m http.server, ungoverned");

    step(
        2,
        "Start mesh-agent, attached to its own cgroup (never the cgroup root)",
    );
    let started = Daemon::start(DaemonOptions {
        command: run_command(&demo.bin.join("mesh-agent"), &demo.config),
        metrics,
        log: dir.join("mesh-agent.log"),
        stop_grace: Duration::from_secs(10),
        footprint: None,
    });
    match started {
        Ok(daemon) => demo.daemon = Some(daemon),
        Err(StartError::Spawn(e)) => {
            return Err(anyhow::Error::new(e).context("starting mesh-agent"))
        }
        Err(_) => bail!(
            "mesh-agent did not become ready; see {}",
            dir.join("mesh-agent.log").display()
        ),
    }
    say(&format!(
        "attached to {}; proxy on 127.0.0.1:{listen_port} and [::1]:{listen_port}",
        attach.display()
    ));
    say(&format!(
        "metrics on http://{metrics}/metrics; log in {}",
        dir.join("mesh-agent.log").display()
    ));

    step(
        3,
        "Run curl as agent `demo`: the kernel redirects its connect() to the mesh",
    );
    let curl_as_demo = |target: &str| {
        meshctl(&[
            "exec",
            "--agent",
            "demo",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            target,
        ])
    };
    show(&mut curl_as_demo(&url))?;

    step(
        4,
        "Ask for a port the policy does not allow: the mesh answers 403 naming the rule",
    );
    let forbidden = format!("http://{SERVER_IP}:{FORBIDDEN_PORT}/");
    show(&mut curl_as_demo(&forbidden))?;

    step(
        5,
        "An MCP agent (the official Python SDK client): the mesh parses every call and applies \
         the policy: tools/list shows only the tools it may use, a write tool and an argument \
         the condition refuses get JSON-RPC errors naming the rule; the allowed call counts \
         against the agent's call budget",
    );
    let venv_python = crate::peers::peers_dir().join("venv/bin/python");
    let scripts = repo_root().join("tests/peers");
    let mcp_server = Command::new(&venv_python)
        .arg(scripts.join("mcp_server.py"))
        .args([
            "--host",
            MCP_IP,
            "--port",
            &MCP_PORT.to_string(),
            "--transport",
            "streamable-http",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the demo MCP server (tests/peers/mcp_server.py)")?;
    demo.children.push(mcp_server);
    if !wait_port(MCP_IP, MCP_PORT) {
        bail!("the demo MCP server did not start on {MCP_IP}:{MCP_PORT}");
    }
    let mcp_url = format!("http://{MCP_IP}:{MCP_PORT}/mcp");
    let venv_python = venv_python.display().to_string();
    let client = scripts.join("mcp_client.py").display().to_string();
    show(&mut meshctl(&[
        "exec",
        "--agent",
        "demo",
        "--",
        &venv_python,
        &client,
        "--url",
        &mcp_url,
        "--mode",
        "auto",
        "--script",
        "steps",
        "--steps",
        r#"[{"op":"list_tools"},
            {"op":"call_tool","name":"add","args":{"a":2,"b":3}},
            {"op":"call_tool","name":"add","args":{"a":5000,"b":1}},
            {"op":"call_tool","name":"remove","args":{"key":"x"}}]"#,
    ]))?;
    // Why, without making the call: the same decision, step by step.
    show(&mut meshctl(&[
        "policy",
        "explain",
        "--agent",
        "demo",
        "--server",
        "demo-tools",
        "--tool",
        "remove",
    ]))?;
    // The allowed call counted against the policy's call budget; the
    // refused ones did not.
    show(&mut meshctl(&["budget", "show", "--agent", "demo"]))?;

    step(
        6,
        "Every governed connection has a record: agent, pid, original destination, verdict, why",
    );
    show(&mut meshctl(&["audit", "tail", "-n", "8"]))?;

    step(
        7,
        "Start a long-running agent that fetches the page every half second",
    );
    let agent_log = dir.join("agent.log");
    let script = format!(
        "import os, time, urllib.request\n\
         while not os.path.exists({stop:?}):\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen({url:?}, timeout=2).read()\n\
         \x20       print(time.strftime('%H:%M:%S'), 'ok', flush=True)\n\
         \x20   except Exception as e:\n\
         \x20       print(time.strftime('%H:%M:%S'), 'failed:', getattr(e, 'reason', e), flush=True)\n\
         \x20   time.sleep(0.5)\n",
        stop = dir.join("stop").display().to_string(),
    );
    let agent = meshctl(&["exec", "--agent", "demo", "--", "python3", "-c", &script])
        .stdout(std::fs::File::create(&agent_log)?)
        .stderr(Stdio::null())
        .spawn()
        .context("starting the demo agent")?;
    demo.agent = Some(agent);
    thread::sleep(Duration::from_secs(2));
    show_tail(&agent_log, 3);
    show(&mut meshctl(&["status"]))?;

    step(
        8,
        "Quarantine the agent: one map write; connects now fail in the kernel",
    );
    show(&mut meshctl(&["quarantine", "demo"]))?;
    thread::sleep(Duration::from_secs(2));
    show_tail(&agent_log, 3);
    show(&mut meshctl(&["status"]))?;

    step(9, "Release it: traffic flows again");
    show(&mut meshctl(&["release", "demo"]))?;
    thread::sleep(Duration::from_secs(2));
    show_tail(&agent_log, 3);

    step(
        10,
        "Stop and clean up: daemon, cgroups, pinned BPF objects, server",
    );
    drop(demo);
    say("done: nothing is left attached or pinned.");
    Ok(ExitCode::SUCCESS)
}

fn show_tail(path: &Path, n: usize) {
    println!("    agent log ({}):", path.display());
    let lines: Vec<String> = std::fs::File::open(path)
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    for line in lines.iter().skip(lines.len().saturating_sub(n)) {
        println!("      {line}");
    }
}
