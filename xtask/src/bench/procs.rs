//! The processes the run starts besides the daemon: servers and nginx,
//! each stopped (by pid) by its guard.
use super::*;

pub(super) fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
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

/// Sends `signal` to a process this run started (by pid).
pub(super) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A server process, killed (by pid) when dropped.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) child: Child,
}

impl Proc {
    pub(super) fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Proc> {
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
pub(super) struct Nginx {
    pub(super) master: Child,
    pub(super) version: String,
}

impl Nginx {
    /// The TCP part's stream proxy, in target/bench/nginx.
    pub(super) fn start_stream(env: &Env) -> Result<Nginx> {
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
    pub(super) fn start(
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
    pub(super) fn pids(&self) -> Vec<u32> {
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
