//! One mesh-agent under a guard: started from a command, waited for until
//! `/readyz` answers 200, stopped (SIGTERM, then SIGKILL after a grace
//! period) when asked or dropped, and its footprint (pins, cgroups) removed
//! after every stop when the launcher wants a fresh daemon each time.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cgroup::remove_cgroup_tree;
use crate::http::http_get;
use crate::process::terminate;

/// How long a daemon may take to become ready (it loads and attaches the
/// eBPF programs first).
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// `AGENT_BIN run --config CONFIG`: the daemon in the foreground.
pub fn run_command(agent_bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(agent_bin);
    cmd.args(["run", "--config"]).arg(config);
    cmd
}

/// What a daemon leaves on the machine: its pinned maps and programs under
/// bpffs and the cgroups it attached to and created. `remove` takes all of
/// it away (`mesh-agent cleanup`, then whatever that left); idempotent.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub agent_bin: PathBuf,
    pub config: PathBuf,
    pub bpffs_dir: PathBuf,
    pub attach_cgroup: PathBuf,
    /// Let `mesh-agent cleanup` write to this process's stdout (the demo
    /// shows what it says); its stderr is discarded either way.
    pub show_output: bool,
}

impl Footprint {
    pub fn remove(&self) {
        let stdout = if self.show_output {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let _ = Command::new(&self.agent_bin)
            .args(["cleanup", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .status();
        if self.bpffs_dir.exists() {
            let _ = std::fs::remove_dir_all(&self.bpffs_dir);
        }
        remove_cgroup_tree(&self.attach_cgroup);
    }
}

/// How to start one daemon.
pub struct DaemonOptions {
    /// The daemon's command line (see [`run_command`]), with its environment;
    /// stdin, stdout and stderr are set by the guard.
    pub command: Command,
    /// Its metrics address, where `/readyz` says when it is ready.
    pub metrics: SocketAddr,
    /// stdout and stderr go here (appended).
    pub log: PathBuf,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// Removed after every stop, and before the error when the start fails.
    pub footprint: Option<Footprint>,
}

/// Why a daemon did not become ready; the daemon has been stopped.
#[derive(Debug)]
pub enum StartError {
    /// Its log file could not be opened or the process not started.
    Spawn(io::Error),
    /// It exited before it was ready.
    Exited { status: ExitStatus, log: String },
    /// Not ready within [`READY_WITHIN`].
    NotReady { log: String },
}

impl StartError {
    /// The daemon's log as it was when the start failed (empty for `Spawn`).
    pub fn log(&self) -> &str {
        match self {
            StartError::Spawn(_) => "",
            StartError::Exited { log, .. } | StartError::NotReady { log } => log,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "cannot start mesh-agent: {e}"),
            StartError::Exited { status, .. } => write!(f, "mesh-agent exited early ({status})"),
            StartError::NotReady { .. } => {
                write!(f, "mesh-agent not ready after {} s", READY_WITHIN.as_secs())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A running daemon; stopped when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    stop_grace: Duration,
    footprint: Option<Footprint>,
}

impl Daemon {
    /// Starts the daemon and waits until it is ready. On failure the daemon
    /// is stopped (and its footprint removed) before the error returns.
    pub fn start(options: DaemonOptions) -> Result<Daemon, StartError> {
        let DaemonOptions {
            mut command,
            metrics,
            log,
            stop_grace,
            footprint,
        } = options;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| {
                StartError::Spawn(io::Error::new(
                    e.kind(),
                    format!("open {}: {e}", log.display()),
                ))
            })?;
        let stdout = file.try_clone().map_err(StartError::Spawn)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .map_err(StartError::Spawn)?;
        let mut daemon = Daemon {
            child: Some(child),
            log,
            stop_grace,
            footprint,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(StartError::Exited {
                    status,
                    log: daemon.log_text(),
                });
            }
            // hyper answers an HTTP/1.0 request with an HTTP/1.0 status line.
            if http_get(metrics, "/readyz")
                .is_some_and(|r| r.split_whitespace().nth(1) == Some("200"))
            {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(StartError::NotReady {
                    log: daemon.log_text(),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no cleanup: what a crash looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (the daemon drains and detaches), SIGKILL after the grace
    /// period, then the footprint removed. The exit status when it exited
    /// by itself in time; `None` when it had to be killed or was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = terminate(&mut child, self.stop_grace);
        if let Some(footprint) = &self.footprint {
            footprint.remove();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
