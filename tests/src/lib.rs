//! Harness for the kernel and end-to-end tiers: a real mesh-agent on real
//! cgroups, each test with its own attach cgroup (never the cgroup root), its
//! own bpffs pin directory, listener, admin socket and metrics port, all torn
//! down by guards even when the test fails.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

pub mod peers;

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
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup2 mount")
}

/// A loopback port free on both 127.0.0.1 and ::1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let l4 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l4.local_addr().expect("addr").port();
        if TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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
    daemon: Option<Child>,
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
        std::fs::write(
            &config,
            format!(
                "attach_cgroup: {attach}\nparent_cgroup: {parent}\nbpffs_dir: {bpffs}\n\
                 listen: [\"127.0.0.1:{listen_port}\", \"[::1]:{listen_port}\"]\n\
                 admin_socket: {admin}\nmetrics: \"{metrics}\"\ndata_dir: {data}\npolicy_dir: {policies}\n",
                attach = attach_cgroup.display(),
                parent = parent_cgroup.display(),
                bpffs = bpffs_dir.display(),
                admin = admin_socket.display(),
                data = dir.join("data").display(),
                policies = policy_dir.display(),
            ),
        )
        .expect("config");
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log");
        let child = Command::new(mesh_agent_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,mesh_agent=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn mesh-agent");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mesh-agent exited early ({status}):\n{}", self.daemon_log());
            }
            if http_get(self.metrics, "/readyz")
                .is_some_and(|r| r.split_whitespace().nth(1) == Some("200"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mesh-agent not ready:\n{}",
                self.daemon_log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon").id()
    }

    /// SIGKILL, no cleanup: what a crash looks like.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            thread::sleep(Duration::from_millis(50));
        }
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
        let _ = Command::new(mesh_agent_bin())
            .args(["cleanup", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.bpffs_dir);
        remove_cgroup_tree(&self.attach_cgroup);
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

/// Kills what is left in a test cgroup tree (cgroup.kill) and removes it,
/// deepest first.
pub fn remove_cgroup_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        for _ in 0..50 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs a command placed in `cgroup` before exec (for cgroups tagged by hand).
pub fn run_in_cgroup(cgroup: &Path, cmd: &[&str]) -> Output {
    command_in_cgroup(cgroup, cmd)
        .output()
        .expect("spawn in cgroup")
}

pub fn command_in_cgroup(cgroup: &Path, cmd: &[&str]) -> Command {
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").to_string_lossy().as_bytes())
        .expect("path");
    let mut c = Command::new(cmd[0]);
    c.args(&cmd[1..]).stdin(Stdio::null());
    // SAFETY: open/write/close only between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Plain HTTP/1.0 GET from the test process (ungoverned).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
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
