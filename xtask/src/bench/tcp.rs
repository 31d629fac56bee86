//! The opaque TCP part: mesh-bench against echo and sink servers, four
//! targets interleaved, then the daemon's memory.
use super::*;

/// What the opaque TCP part measured.
pub(super) struct TcpPart {
    pub(super) runs: Vec<RunResult>,
    pub(super) memory: Vec<(&'static str, Result<Memory>)>,
    pub(super) nginx_version: String,
    pub(super) elapsed: Duration,
    /// CPU other work used meanwhile, % of the machine.
    pub(super) other_cpu: Option<OtherCpu>,
}

pub(super) type MemoryResults = Vec<(&'static str, Result<Memory>)>;

/// The opaque TCP part: the four targets interleaved, then daemon memory.
pub(super) fn run_tcp(
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

#[derive(Default, Clone, Copy)]
pub(super) struct MeshCounters {
    pub(super) allowed: u64,
    pub(super) refused: u64,
    pub(super) errors: u64,
}

pub(super) struct RunResult {
    pub(super) target: Target,
    pub(super) rep: usize,
    /// connect_p50, connect_p99, rr_p50, rr_p99, max_rps, mbps, …
    pub(super) values: BTreeMap<&'static str, f64>,
    pub(super) errors: Vec<String>,
    pub(super) mesh: Option<MeshCounters>,
}

impl RunResult {
    pub(super) fn failed(target: Target, rep: usize, error: String) -> RunResult {
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

pub(super) fn measure(env: &Env, params: &Params, target: Target, rep: usize) -> RunResult {
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

pub(super) struct Memory {
    pub(super) idle_kib: u64,
    pub(super) held_kib: u64,
    pub(super) held_hwm_kib: u64,
    pub(super) after_kib: u64,
    pub(super) active: Option<u64>,
    pub(super) open_ms: f64,
}

/// VmRSS and VmHWM (KiB) from /proc/PID/status.
pub(super) fn rss(pid: u32) -> Result<(u64, u64)> {
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

pub(super) fn measure_memory(env: &Env, relay: &str, log: &Path) -> Result<Memory> {
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
pub(super) fn meshctl_active_connections(env: &Env) -> Option<u64> {
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

impl TcpPart {
    pub(super) fn median(&self, target: Target, key: &str) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter(|r| r.target == target)
                .filter_map(|r| r.values.get(key).copied())
                .collect(),
        )
    }
}
