//! The real peers of the end-to-end tests (tests/peers/, installed pinned by
//! `cargo xtask setup` into `<target>/peers/`): MCP, A2A and LLM servers
//! started from the test process (in no cgroup of the test's), and the peer
//! clients as plain `Command`s for the tests to run however they govern them.
//!
//! Every server listens on the loopback address it is given and is killed,
//! with its whole process group, when its [`PeerServer`] guard drops.
use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::bin_dir;

/// How long a peer server may take to start listening (Python imports on a
/// busy 2-core machine take seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The peer programs in the repository (tests/peers).
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// `<target>/peers`, where `cargo xtask setup` installs the peers.
pub fn peers_dir() -> PathBuf {
    bin_dir()
        .parent()
        .expect("target dir above the profile dir")
        .join("peers")
}

/// True when both halves (venv and node packages) are installed.
pub fn peers_installed() -> bool {
    let dir = peers_dir();
    dir.join("venv/bin/python").exists()
        && dir.join("venv.stamp").exists()
        && dir.join("node/node_modules").is_dir()
        && dir.join("node.stamp").exists()
}

/// The peers venv's python (mcp, a2a-sdk, openai, anthropic installed).
pub fn venv_python() -> PathBuf {
    let p = peers_dir().join("venv/bin/python");
    assert!(
        p.exists() && peers_dir().join("venv.stamp").exists(),
        "{}: the python test peers are not installed (or not completely); run `cargo xtask setup`",
        p.display()
    );
    p
}

/// `<target>/peers/node` (its node_modules holds server-everything and aimock).
pub fn node_dir() -> PathBuf {
    let d = peers_dir().join("node");
    assert!(
        d.join("node_modules").is_dir() && peers_dir().join("node.stamp").exists(),
        "{}: the node test peers are not installed (or not completely); run `cargo xtask setup`",
        d.join("node_modules").display()
    );
    d
}

/// argv for a peer client script: `[<venv python>, <tests/peers/script>, args…]`,
/// for helpers that take `&[&str]` (e.g. `command_in_cgroup`, `Mesh::exec`).
pub fn python_argv(script: &str, args: &[&str]) -> Vec<String> {
    let path = scripts_dir().join(script);
    assert!(path.exists(), "no peer script {}", path.display());
    let mut argv = vec![
        venv_python().to_string_lossy().into_owned(),
        path.to_string_lossy().into_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// `python tests/peers/<script> <args…>` with the venv's python, stdin null,
/// unbuffered output, no bytecode written into the source tree.
pub fn python_command(script: &str, args: &[&str]) -> Command {
    let argv = python_argv(script, args);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    c
}

/// Which peer server to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// tests/peers/mcp_server.py, streamable HTTP at /mcp (python mcp 2.3.0).
    Mcp,
    /// tests/peers/mcp_server.py, HTTP+SSE (2024-11-05) at /sse + /messages/.
    McpSse,
    /// tests/peers/a2a_server.py, JSON-RPC at / (a2a-sdk 1.3.0, 1.0 + 0.3 compat).
    A2a,
    /// @modelcontextprotocol/server-everything 2026.8.31, streamable HTTP at
    /// /mcp. It listens on ALL interfaces (no host option): send it loopback
    /// traffic only. Ready when the port accepts.
    Everything,
    /// @copilotkit/aimock 1.43.0 with tests/peers/aimock-fixture.json:
    /// /v1/chat/completions, /v1/responses, /v1/messages.
    Aimock,
}

/// A running peer server; killed (process group included) on drop.
pub struct PeerServer {
    pub kind: PeerKind,
    pub host: String,
    pub port: u16,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Output already shown (in a start-up panic): not again on drop.
    reported: bool,
}

impl PeerServer {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.parse().expect("host ip"), self.port)
    }

    /// `http://host:port` (IPv6 bracketed), no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The endpoint a client is given: /mcp, /sse, / (A2A), or the base URL
    /// (aimock; see [`Self::openai_base_url`] and [`Self::anthropic_base_url`]).
    pub fn url(&self) -> String {
        let base = self.base_url();
        match self.kind {
            PeerKind::Mcp | PeerKind::Everything => format!("{base}/mcp"),
            PeerKind::McpSse => format!("{base}/sse"),
            PeerKind::A2a => format!("{base}/"),
            PeerKind::Aimock => base,
        }
    }

    /// `--base-url` for `llm_client.py --provider openai`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// `--base-url` for `llm_client.py --provider anthropic`.
    pub fn anthropic_base_url(&self) -> String {
        self.base_url()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far: (stdout, stderr).
    pub fn output(&self) -> (String, String) {
        (
            self.stdout.lock().map(|s| s.clone()).unwrap_or_default(),
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default(),
        )
    }

    fn kill(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child's process group (it was started
        // with process_group(0), so its pgid is its pid) and then the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.reported {
            let (out, err) = self.output();
            eprintln!(
                "--- peer {:?} at {} (pid {}) ---\nstdout:\n{out}\nstderr:\n{err}",
                self.kind,
                self.addr(),
                self.pid()
            );
        }
    }
}

/// Starts a peer server on `host:port` (`port` 0: a free one, reported in
/// the guard) and waits until it is ready (its `READY host:port` line, or
/// the port accepting). Panics with the server's output if it exits or is
/// not ready within a minute.
pub fn spawn_server(kind: PeerKind, host: &str, port: u16) -> PeerServer {
    assert_loopback(host);

    let mut cmd = match kind {
        PeerKind::Mcp | PeerKind::McpSse => {
            let transport = if kind == PeerKind::Mcp {
                "streamable-http"
            } else {
                "sse"
            };
            let port = port.to_string();
            python_command(
                "mcp_server.py",
                &["--host", host, "--port", &port, "--transport", transport],
            )
        }
        PeerKind::A2a => {
            let port = port.to_string();
            python_command("a2a_server.py", &["--host", host, "--port", &port])
        }
        PeerKind::Everything => {
            let port = if port == 0 {
                free_wildcard_port()
            } else {
                port
            };
            let node = node_dir();
            let mut c = Command::new("node");
            c.arg(node.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
                .arg("streamableHttp")
                .env("PORT", port.to_string())
                .current_dir(&node);
            return start(kind, c, host, Some(port));
        }
        PeerKind::Aimock => return spawn_aimock_with(host, port, &[]),
    };
    cmd.current_dir(scripts_dir());
    start(kind, cmd, host, None)
}

/// Starts @copilotkit/aimock like [`PeerKind::Aimock`] (tests/peers/aimock-fixture.json)
/// with more fixture files of tests/peers after it (aimock matches the first
/// fixture that fits, in file order).
pub fn spawn_aimock_with(host: &str, port: u16, extra_fixtures: &[&str]) -> PeerServer {
    assert_loopback(host);
    let node = node_dir();
    let mut c = Command::new("node");
    c.arg(node.join("node_modules/@copilotkit/aimock/dist/cli.js"))
        .args(["--host", host, "--port", &port.to_string()])
        .arg("--fixtures")
        .arg(scripts_dir().join("aimock-fixture.json"));
    for file in extra_fixtures {
        let path = scripts_dir().join(file);
        assert!(path.exists(), "no aimock fixture {}", path.display());
        c.arg("--fixtures").arg(path);
    }
    // info: it prints "listening on http://host:port" (the readiness line).
    c.args(["--log-level", "info", "--validate-on-load"])
        .current_dir(&node);
    start(PeerKind::Aimock, c, host, None)
}

/// Peer servers bind only to loopback (the safety rules).
fn assert_loopback(host: &str) {
    let ip: IpAddr = host
        .parse()
        .unwrap_or_else(|_| panic!("peer host {host:?} is not an IP address"));
    assert!(
        ip.is_loopback(),
        "peer servers bind only to loopback, not {host}"
    );
}

/// Runs a peer script as `agent` through `meshctl exec`; panics (with the
/// daemon's log) unless it exits 0. Returns its stdout.
pub fn run_as(mesh: &crate::Mesh, agent: &str, script: &str, args: &[&str]) -> String {
    let argv = python_argv(script, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = mesh.exec(agent, &argv);
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\nstdout:\n{}\nstderr:\n{}\ndaemon:\n{}",
        crate::stdout(&out),
        crate::stderr(&out),
        mesh.daemon_log()
    );
    crate::stdout(&out)
}

/// A port free on the wildcard address (for server-everything, which binds
/// all interfaces and cannot report a port it picked).
fn free_wildcard_port() -> u16 {
    TcpListener::bind("[::]:0")
        .or_else(|_| TcpListener::bind("0.0.0.0:0"))
        .expect("bind a wildcard port")
        .local_addr()
        .expect("addr")
        .port()
}

/// The port of a readiness line: `READY host:port` (the python peers) or
/// `… listening on http://host:port` (aimock).
fn ready_port(line: &str) -> Option<u16> {
    let rest = if let Some(r) = line.trim().strip_prefix("READY ") {
        r
    } else {
        let i = line.find("listening on http://")?;
        &line[i + "listening on http://".len()..]
    };
    rest.trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Spawns `cmd` in its own process group, drains its output into buffers,
/// and waits for readiness: a readiness line on stdout, or (`poll_port`) the
/// port accepting on `host`.
fn start(kind: PeerKind, mut cmd: Command, host: &str, poll_port: Option<u16>) -> PeerServer {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn peer {kind:?} ({cmd:?}): {e}"));
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = mpsc::channel::<u16>();
    {
        let out = child.stdout.take().expect("piped stdout");
        let buf = stdout.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(port) = ready_port(&line) {
                            let _ = ready_tx.send(port);
                        }
                        if let Ok(mut b) = buf.lock() {
                            b.push_str(&line);
                        }
                    }
                }
            }
        });
    }
    {
        let mut err = child.stderr.take().expect("piped stderr");
        let buf = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match err.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut b) = buf.lock() {
                            b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        }
                    }
                }
            }
        });
    }
    let mut server = PeerServer {
        kind,
        host: host.to_owned(),
        port: poll_port.unwrap_or(0),
        child,
        stdout,
        stderr,
        reported: false,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(port) = poll_port {
            let addr = SocketAddr::new(host.parse().expect("ip"), port);
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return server;
            }
        } else if let Ok(port) = ready_rx.recv_timeout(Duration::from_millis(50)) {
            server.port = port;
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            // Let the reader threads catch the last output.
            thread::sleep(Duration::from_millis(100));
            let (out, err) = server.output();
            server.reported = true;
            panic!("peer {kind:?} on {host} exited before it was ready ({status})\nstdout:\n{out}\nstderr:\n{err}");
        }
        if Instant::now() > deadline {
            server.kill();
            let (out, err) = server.output();
            server.reported = true;
            panic!(
                "peer {kind:?} on {host} not ready after {}s\nstdout:\n{out}\nstderr:\n{err}",
                START_TIMEOUT.as_secs()
            );
        }
        if poll_port.is_some() {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ready_port;

    #[test]
    fn parses_readiness_lines() {
        assert_eq!(ready_port("READY 127.0.0.2:4312\n"), Some(4312));
        assert_eq!(ready_port("READY [::1]:80"), Some(80));
        assert_eq!(
            ready_port("[aimock] aimock server listening on http://127.0.0.4:35057\n"),
            Some(35057)
        );
        assert_eq!(ready_port("Starting Streamable HTTP server..."), None);
    }
}
