//! The bench's daemon: mesh-agent under the test bed's guard, fresh for
//! each measurement set, its pins and cgroups removed after each stop.
use super::*;

/// One mesh-agent, stopped and cleaned up (pins, cgroups) when dropped.
pub(super) struct Daemon<'a> {
    pub(super) env: &'a Env,
    guard: mesh_testbed::Daemon,
}

impl<'a> Daemon<'a> {
    /// A fresh daemon, with `MESH_RELAY=relay` when given (the default
    /// strategy otherwise).
    pub(super) fn start(env: &'a Env, relay: Option<&str>, log: &Path) -> Result<Daemon<'a>> {
        env.footprint().remove();
        let _ = std::fs::remove_dir_all(&env.data_dir);
        let config = env.config.to_string_lossy().into_owned();
        let mut cmd = with_nofile(&env.agent_bin, &["run", "--config", &config]);
        if let Some(relay) = relay {
            cmd.env("MESH_RELAY", relay);
        }
        cmd.env("RUST_LOG", daemon_rust_log()).env("NO_COLOR", "1");
        let shown = display_cmd(&cmd);
        let started = mesh_testbed::Daemon::start(DaemonOptions {
            command: cmd,
            metrics: env.metrics,
            log: log.to_owned(),
            stop_grace: Duration::from_secs(40),
            footprint: Some(env.footprint()),
        });
        match started {
            Ok(guard) => Ok(Daemon { env, guard }),
            Err(StartError::Spawn(e)) => {
                Err(anyhow::Error::new(e).context(format!("start {shown}")))
            }
            Err(e) => bail!("{e}; {}:\n{}", log.display(), tail(e.log(), 30)),
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// Connections the daemon counted for the bench agent, by decision.
    pub(super) fn counters(&self) -> MeshCounters {
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
    pub(super) fn stop(&mut self) -> Result<()> {
        if self.guard.pid().is_none() {
            return Ok(());
        }
        match self.guard.stop() {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("mesh-agent exited with {s}"),
            None => bail!("mesh-agent could not be reaped"),
        }
    }
}

/// The daemon's `RUST_LOG`: `info` (each record logged, as deployed), or
/// `MESH_BENCH_RUST_LOG` for diagnosis.
pub(super) fn daemon_rust_log() -> String {
    std::env::var("MESH_BENCH_RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "info".into())
}

/// Settings of this run that change the daemon from its defaults, for the
/// document: `MESH_BENCH_RUST_LOG`, and `MESH_WORKER_THREADS` (read by the
/// daemon itself, inherited from this process).
pub(super) fn daemon_overrides() -> Vec<String> {
    ["MESH_BENCH_RUST_LOG", "MESH_WORKER_THREADS"]
        .iter()
        .filter_map(|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
            Some(format!("`{k}={v}`"))
        })
        .collect()
}
