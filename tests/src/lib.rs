//! Harness for the kernel and end-to-end tiers: a real mesh-agent on real
//! cgroups, each test with its own attach cgroup (never the cgroup root), its
//! own bpffs pin directory, listener, admin socket and metrics port, all torn
//! down by guards even when the test fails.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

pub use mesh_testbed::{command_in_cgroup, http_get, remove_cgroup_tree};
use mesh_testbed::{run_command, Daemon, DaemonConfig, DaemonOptions, Footprint, StartError};

pub mod peers;
pub mod users;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the kernel and end-to-end tests need root (run `cargo xtask test` as root)"
    );
}

/// target/debug (or whichever profile built this test).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

pub fn mesh_agent_bin() -> PathBuf {
    let p = bin_dir().join("mesh-agent");
    assert!(
        p.exists(),
        "{} missing: build with `cargo build -p mesh-agent` (cargo xtask test does)",
        p.display()
    );
    p
}

pub fn meshctl_bin() -> PathBuf {
    bin_dir().join("meshctl")
}

pub fn cgroup2_mount() -> PathBuf {
    mesh_testbed::cgroup2_mount().expect("no cgroup2 mount")
}

/// A loopback port free on both 127.0.0.1 and ::1.
pub fn free_port() -> u16 {
    mesh_testbed::free_port_pair().expect("no free port pair")
}

pub fn free_port_on(ip: &str) -> u16 {
    mesh_testbed::free_port(ip).expect("bind")
}

/// One daemon under test and everything it owns.
pub struct Mesh {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub policy_dir: PathBuf,
    pub attach_cgroup: PathBuf,
    pub parent_cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub listen_port: u16,
    pub metrics: SocketAddr,
    daemon: Option<Daemon>,
    footprint: Footprint,
}

impl Mesh {
    /// Writes config and policies; does not start the daemon.
    pub fn new(name: &str, policies: &[(&str, &str)]) -> Mesh {
        require_root();
        let unique = format!("{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("mesh-test-{unique}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("test dir");
        let root = cgroup2_mount();
        let attach_cgroup = root.join(format!("mesh-test-{unique}"));
        let parent_cgroup = attach_cgroup.join("agents");
        let bpffs_dir = PathBuf::from(format!("/sys/fs/bpf/mesh-test-{unique}"));
        let listen_port = free_port();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port_on("127.0.0.1"))
            .parse()
            .expect("addr");
        let admin_socket = dir.join("admin.sock");
        let policy_dir = dir.join("policies");
        for (file, text) in policies {
            std::fs::write(policy_dir.join(file), text).expect("policy");
        }
        let config = dir.join("config.yaml");
        DaemonConfig {
            header: Vec::new(),
            cgroup_root: None,
            attach_cgroup: attach_cgroup.clone(),
            parent_cgroup: parent_cgroup.clone(),
            bpffs_dir: bpffs_dir.clone(),
            listen_port,
            admin_socket: admin_socket.clone(),
            admin_groups: None,
            metrics,
            data_dir: dir.join("data"),
            policy_dir: policy_dir.clone(),
        }
        .write(&config)
        .expect("config");
        let footprint = Footprint {
            agent_bin: mesh_agent_bin(),
            config: config.clone(),
            bpffs_dir: bpffs_dir.clone(),
            attach_cgroup: attach_cgroup.clone(),
            show_output: false,
        };
        Mesh {
            name: name.to_owned(),
            dir,
            config,
            policy_dir,
            attach_cgroup,
            parent_cgroup,
            bpffs_dir,
            admin_socket,
            listen_port,
            metrics,
            daemon: None,
            footprint,
        }
    }

    /// New and started, waiting until ready.
    pub fn start(name: &str, policies: &[(&str, &str)]) -> Mesh {
        let mut mesh = Mesh::new(name, policies);
        mesh.start_daemon();
        mesh
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let mut command = run_command(&mesh_agent_bin(), &self.config);
        command.env("RUST_LOG", "info,mesh_agent=debug");
        let started = Daemon::start(DaemonOptions {
            command,
            metrics: self.metrics,
            log: self.dir.join("daemon.log"),
            stop_grace: Duration::from_secs(40),
            // Pins and cgroups outlive a restart; the guard removes them.
            footprint: None,
        });
        match started {
            Ok(daemon) => self.daemon = Some(daemon),
            Err(e @ StartError::Exited { .. }) => panic!("{e}:\n{}", e.log()),
            Err(e @ StartError::NotReady { .. }) => panic!("mesh-agent not ready:\n{}", e.log()),
            Err(e) => panic!("spawn mesh-agent: {e}"),
        }
    }

    /// Names the groups of the admin API's viewers and operators in the
    /// config (before the daemon starts).
    pub fn set_admin_groups(&self, viewers: &str, operators: &str) {
        use std::io::Write as _;
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("open config");
        write!(
            config,
            "admin_viewers_group: \"{viewers}\"\nadmin_operators_group: \"{operators}\"\n"
        )
        .expect("write config");
    }

    /// Binds host names to addresses in the config's `hosts:` map (before
    /// the daemon starts): the names policy allows by resolve only there.
    pub fn set_hosts(&self, hosts: &[(&str, &str)]) {
        use std::io::Write as _;
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("open config");
        writeln!(config, "hosts:").expect("write config");
        for (name, ip) in hosts {
            writeln!(config, "  {name}: [\"{ip}\"]").expect("write config");
        }
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().and_then(Daemon::pid).expect("daemon")
    }

    /// SIGKILL, no cleanup: what a crash looks like.
    pub fn kill_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// SIGTERM and wait.
    pub fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.take()?.stop()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn meshctl(&self, args: &[&str]) -> Output {
        Command::new(meshctl_bin())
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run meshctl")
    }

    /// `meshctl exec --agent AGENT -- CMD…`
    pub fn exec(&self, agent: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", "--agent", agent, "--"];
        args.extend_from_slice(cmd);
        self.meshctl(&args)
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        let out = self.meshctl(&["--output", "json", "audit", "tail", "-n", "10000"]);
        assert!(
            out.status.success(),
            "audit tail: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("records json");
        v["records"].as_array().cloned().unwrap_or_default()
    }

    /// Records are written when a connection ends, which may be just after
    /// the client exits: waits (bounded) until `n` records for `dst` exist and
    /// returns all records then.
    pub fn records_once(&self, dst: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records = self.records();
            let found = records
                .iter()
                .filter(|r| r["original_destination"] == dst)
                .count();
            if found >= n || Instant::now() > deadline {
                return records;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until some record satisfies `pred`; returns all records.
    pub fn records_until(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records = self.records();
            if records.iter().any(&pred) || Instant::now() > deadline {
                return records;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Request records (those with a `call`) to `dst`, once `until` holds
    /// for them (records are written when a response ends), or after 20 s.
    pub fn call_records(
        &self,
        dst: &str,
        until: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records: Vec<serde_json::Value> = self
                .records()
                .into_iter()
                .filter(|r| r["original_destination"] == dst && r["call"].is_object())
                .collect();
            if until(&records) || Instant::now() > deadline {
                return records;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.meshctl(&["--output", "json", "status"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics").expect("metrics scrape")
    }

    /// A cgroup below the attach cgroup, made by the test (removed by the guard).
    pub fn make_cgroup(&self, rel: &str) -> PathBuf {
        let p = self.attach_cgroup.join(rel);
        std::fs::create_dir_all(&p).expect("create cgroup");
        p
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.stop_daemon();
        self.footprint.remove();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "[{}] test dir kept: {}\n--- daemon log ---\n{}",
                self.name,
                self.dir.display(),
                self.daemon_log()
            );
        }
    }
}

/// Runs a command placed in `cgroup` before exec (for cgroups tagged by hand).
pub fn run_in_cgroup(cgroup: &Path, cmd: &[&str]) -> Output {
    command_in_cgroup(cgroup, cmd)
        .output()
        .expect("spawn in cgroup")
}

/// A tiny HTTP server on a loopback address that answers every request with
/// a body naming itself, and counts the connections it accepted.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub body: String,
}

impl HttpServer {
    pub fn start(ip: &str) -> HttpServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind test server");
        let addr = listener.local_addr().expect("addr");
        let body = format!("hello from test server {addr}\n");
        let connections = Arc::new(AtomicUsize::new(0));
        let (b, c) = (body.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                thread::spawn(move || serve_http(stream, &b));
            }
        });
        HttpServer {
            addr,
            connections,
            body,
        }
    }

    pub fn url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("http://{a}/"),
            SocketAddr::V6(a) => format!("http://[{}]:{}/", a.ip(), a.port()),
        }
    }

    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve_http(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Echo server: writes back whatever it reads, until EOF.
pub struct EchoServer {
    pub addr: SocketAddr,
}

impl EchoServer {
    pub fn start(ip: &str) -> EchoServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        EchoServer { addr }
    }
}

/// A policy file allowing `agent` to reach `allow`.
pub fn egress_policy(agent: &str, allow: &[String]) -> String {
    let list: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: {{ name: {agent} }}\nagent: {agent}\n\
         egress:\n  default: deny\n  allow: [{}]\n",
        list.join(", ")
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
