//! The MCP `tools/call` part of `cargo xtask bench` (docs/benchmarks.md).
//!
//! The method of the benchmark anchors: a JSON-RPC `tools/call` POST with
//! about 1 KiB of arguments (`content-type: application/json`, `accept:
//! application/json, text/event-stream`), answered with a 1 KiB JSON-RPC
//! result by an nginx backend on 127.0.0.2 (`return 200 '…'`, keepalive).
//! Load from `oha` (`--no-tui --output-format json`): a fixed 1,000 calls/s
//! on 16 connections (latency) and as fast as possible on 32 connections
//! (throughput), for `MESH_BENCH_SECONDS` each. Three targets, interleaved
//! (direct, nginx, mesh; again …), `MESH_BENCH_REPS` times:
//!
//! - **direct**: oha to the backend;
//! - **nginx**: oha to nginx on 127.0.0.3, an HTTP reverse proxy
//!   (`proxy_pass` with upstream keepalive, 2 workers) in front of it;
//! - **mesh**: oha governed (`meshctl exec --agent bench -- oha …`) to the
//!   backend's own address; the kernel redirects its connects to mesh-agent,
//!   which parses every request (an MCP `tools/call`), decides, records it
//!   and forwards it on a pooled upstream connection.
//!
//! Besides oha's numbers, the CPU time the proxy (nginx's processes, the
//! daemon) and the backend spent during each load, per call, from
//! /proc/PID/stat.
use super::*;

/// Size of the `arguments` object of the request, serialized.
pub(super) const ARGS_BYTES: usize = 1024;
/// Size of the backend's reply body.
pub(super) const REPLY_BYTES: usize = 1024;
pub(super) const TOOL: &str = "create_ticket";
pub(super) const ACCEPT: &str = "application/json, text/event-stream";
/// The targets for mesh.
pub(super) const ADDED_P50_TARGET_US: f64 = 100.0;
pub(super) const RPS_RATIO_TARGET: f64 = 0.6;
/// oha's error for the requests in flight when `-z` ends; not a failure.
pub(super) const DEADLINE_ABORT: &str = "aborted due to deadline";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum McpTarget {
    Direct,
    Nginx,
    Mesh,
}

pub(super) const MCP_TARGETS: [McpTarget; 3] =
    [McpTarget::Direct, McpTarget::Nginx, McpTarget::Mesh];

impl McpTarget {
    pub(super) fn label(self) -> &'static str {
        match self {
            McpTarget::Direct => "direct",
            McpTarget::Nginx => "nginx",
            McpTarget::Mesh => "mesh",
        }
    }

    pub(super) fn description(self) -> &'static str {
        match self {
            McpTarget::Direct => "direct to the backend",
            McpTarget::Nginx => "nginx reverse proxy (2 workers, upstream keepalive, no parsing)",
            McpTarget::Mesh => "mesh (governed client, every call parsed, decided, recorded)",
        }
    }
}

/// What the daemon counted for the bench agent during one measurement set.
#[derive(Default, Clone, Copy)]
pub(super) struct McpCounters {
    /// `mesh_tool_calls_total{agent="bench",tool=TOOL,decision="allow"}`.
    pub(super) tool_calls: u64,
    /// `mesh_requests_total{agent="bench",protocol="mcp",decision="allow"}`.
    pub(super) mcp_allowed: u64,
    /// Any other request or connection of the bench agent.
    pub(super) other: u64,
}

pub(super) struct McpRun {
    pub(super) target: McpTarget,
    pub(super) rep: usize,
    /// p50, p99, rps (@1k); max_rps, max_p50, max_p99; cpu_* (µs per call).
    pub(super) values: BTreeMap<&'static str, f64>,
    pub(super) errors: Vec<String>,
    pub(super) daemon: Option<McpCounters>,
    /// Calls answered 200 over both loads.
    pub(super) ok_calls: u64,
}

pub(super) struct McpPart {
    pub(super) runs: Vec<McpRun>,
    pub(super) nginx_version: String,
    pub(super) oha_version: String,
    pub(super) elapsed: Duration,
    /// CPU other work used meanwhile, % of the machine.
    pub(super) other_cpu: Option<OtherCpu>,
    pub(super) request_bytes: usize,
}

impl McpPart {
    pub(super) fn failed(&self) -> bool {
        self.runs.iter().any(|r| !r.errors.is_empty())
    }

    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.runs {
            for e in &r.errors {
                out.push(format!("MCP rep {} {}: {e}", r.rep, r.target.label()));
            }
        }
        out
    }

    pub(super) fn median(&self, target: McpTarget, key: &str) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter(|r| r.target == target)
                .filter_map(|r| r.values.get(key).copied())
                .collect(),
        )
    }
}

/// The request body: a JSON-RPC `tools/call` whose `arguments` serialize to
/// exactly `ARGS_BYTES` bytes.
pub(super) fn request_body() -> String {
    let head = r#"{"project":"MESH","title":"Benchmark ticket","priority":3,"labels":["bench","mcp","latency"],"assignee":null,"body":""#;
    let tail = r#""}"#;
    let args = format!(
        "{head}{}{tail}",
        filler(ARGS_BYTES - head.len() - tail.len())
    );
    debug_assert_eq!(args.len(), ARGS_BYTES);
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{TOOL}","arguments":{args}}}}}"#
    )
}

/// The backend's reply: a JSON-RPC result of exactly `REPLY_BYTES` bytes.
pub(super) fn reply_body() -> String {
    let head = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#;
    let tail = r#""}],"isError":false}}"#;
    format!(
        "{head}{}{tail}",
        filler(REPLY_BYTES - head.len() - tail.len())
    )
}

/// `n` bytes of prose: no quotes, backslashes or `$` (the reply sits in an
/// nginx string).
pub(super) fn filler(n: usize) -> String {
    const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
                        tempor incididunt ut labore et dolore magna aliqua. ";
    TEXT.chars().cycle().take(n).collect()
}

/// A program on PATH.
pub(super) fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found on PATH (cargo xtask setup --bench)"))
}

/// User + system CPU time (clock ticks) of `pids`, from /proc/PID/stat.
pub(super) fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces): state is
            // field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

pub(super) fn clock_ticks_per_second() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}

/// One HTTP/1.1 POST of the bench request (ungoverned); the status and body.
pub(super) fn post_once(addr: SocketAddr, body: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\naccept: {ACCEPT}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, raw[split + 4..].to_vec()))
}

pub(super) fn run(env: &Env, params: &Params, daemon_logs: &mut Vec<PathBuf>) -> Result<McpPart> {
    let started = Instant::now();
    let part_cpu = CpuSample::take();
    let oha = which("oha")?;
    let oha_version = command_line(&oha.to_string_lossy(), &["--version"]);
    let dir = env.dir.join("mcp");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let body = request_body();
    let body_file = dir.join("request.json");
    std::fs::write(&body_file, &body)?;
    let reply = reply_body();

    let backend = SocketAddr::new([127, 0, 0, 2].into(), free_port("127.0.0.2")?);
    let proxy = SocketAddr::new([127, 0, 0, 3].into(), free_port("127.0.0.3")?);
    let backend_nginx = Nginx::start(
        env,
        "mcp-backend",
        "",
        2,
        &format!(
            "http {{\n\
             \x20   access_log off;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   server {{\n\
             \x20       listen {backend};\n\
             \x20       location / {{ default_type application/json; return 200 '{reply}'; }}\n\
             \x20   }}\n\
             }}\n"
        ),
        &[backend],
    )?;
    let proxy_nginx = Nginx::start(
        env,
        "mcp-proxy",
        "",
        2,
        &format!(
            "http {{\n\
             \x20   access_log off;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   upstream backend {{ server {backend}; keepalive 64; keepalive_requests 1000000; }}\n\
             \x20   server {{\n\
             \x20       listen {proxy};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://backend;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n"
        ),
        &[proxy],
    )?;
    let nginx_version = proxy_nginx.version.clone();
    for (addr, what) in [(backend, "the backend"), (proxy, "nginx (proxy)")] {
        let (status, got) = post_once(addr, &body).with_context(|| format!("POST to {what}"))?;
        ensure!(
            status == 200 && got == reply.as_bytes(),
            "{what} answered {status} with {} bytes, not the {REPLY_BYTES}-byte reply",
            got.len()
        );
    }
    println!(
        "bench: MCP tools/call: backend {backend}, nginx {proxy}; request {} bytes (arguments {ARGS_BYTES}), reply {REPLY_BYTES} bytes; {oha_version}",
        body.len()
    );

    let tick = clock_ticks_per_second();
    let mut runs = Vec::new();
    for rep in 1..=params.reps {
        for target in MCP_TARGETS {
            println!("bench: MCP [{rep}/{}] {}", params.reps, target.label());
            let mut run = McpRun {
                target,
                rep,
                values: BTreeMap::new(),
                errors: Vec::new(),
                daemon: None,
                ok_calls: 0,
            };
            let cpu = CpuSample::take();
            let backend_pids = backend_nginx.pids();
            match target {
                McpTarget::Direct => {
                    let load = Load {
                        env,
                        params,
                        oha: &oha,
                        body_file: &body_file,
                        tick,
                    };
                    load.measure(&mut run, backend, None, &[], &backend_pids);
                }
                McpTarget::Nginx => {
                    let load = Load {
                        env,
                        params,
                        oha: &oha,
                        body_file: &body_file,
                        tick,
                    };
                    load.measure(&mut run, proxy, None, &proxy_nginx.pids(), &backend_pids);
                }
                McpTarget::Mesh => {
                    let log = env.dir.join(format!("daemon-mcp-rep{rep}.log"));
                    daemon_logs.push(log.clone());
                    match Daemon::start(env, None, &log) {
                        Ok(mut daemon) => {
                            let pid = daemon.pid().unwrap_or(0);
                            let load = Load {
                                env,
                                params,
                                oha: &oha,
                                body_file: &body_file,
                                tick,
                            };
                            load.measure(&mut run, backend, Some(env), &[pid], &backend_pids);
                            if let Ok((rss, hwm)) = rss(pid) {
                                run.values.insert("rss_mib", kib_to_mib(rss));
                                run.values.insert("hwm_mib", kib_to_mib(hwm));
                            }
                            let c = mcp_counters(&daemon);
                            if c.other > 0 {
                                run.errors.push(format!(
                                    "the daemon counted {} requests that were not allowed MCP calls",
                                    c.other
                                ));
                            }
                            // Calls in flight when oha's deadline hit reached
                            // the daemon too: it may count a few more.
                            if c.tool_calls < run.ok_calls {
                                run.errors.push(format!(
                                    "the daemon recorded {} tools/call requests, oha got {} answers",
                                    c.tool_calls, run.ok_calls
                                ));
                            }
                            run.daemon = Some(c);
                            if let Err(e) = daemon.stop() {
                                run.errors.push(format!("stopping the daemon: {e:#}"));
                            }
                        }
                        Err(e) => {
                            println!("bench:   failed: {e:#}");
                            run.errors.push(format!("{e:#}"));
                        }
                    }
                }
            }
            if let Some(o) = cpu.other_pct() {
                o.insert_into(&mut run.values);
            }
            runs.push(run);
            thread::sleep(Duration::from_millis(500));
        }
    }
    drop(proxy_nginx);
    drop(backend_nginx);
    Ok(McpPart {
        runs,
        nginx_version,
        oha_version,
        elapsed: started.elapsed(),
        other_cpu: part_cpu.other_pct(),
        request_bytes: body.len(),
    })
}

/// What every oha run of the part shares.
pub(super) struct Load<'a> {
    pub(super) env: &'a Env,
    pub(super) params: &'a Params,
    pub(super) oha: &'a Path,
    pub(super) body_file: &'a Path,
    pub(super) tick: f64,
}

impl Load<'_> {
    /// The fixed-rate load, then the unthrottled one, against `addr`;
    /// governed when `governed` is given. CPU of `proxy_pids` and
    /// `backend_pids` is sampled around each load.
    pub(super) fn measure(
        &self,
        run: &mut McpRun,
        addr: SocketAddr,
        governed: Option<&Env>,
        proxy_pids: &[u32],
        backend_pids: &[u32],
    ) {
        let loads: [(&str, &str, usize, Option<u64>); 2] = [
            ("@1k rps", "", PACED_CONNS, Some(PACED_RATE)),
            ("max", "max_", MAX_CONNS, None),
        ];
        for (what, prefix, conns, rate) in loads {
            let url = format!("http://{addr}/mcp");
            let duration = format!("{}s", self.params.seconds);
            let conns = conns.to_string();
            let body_file = self.body_file.to_string_lossy().into_owned();
            let accept = format!("accept: {ACCEPT}");
            let rate = rate.map(|r| r.to_string());
            let mut args = vec![
                "--no-tui",
                "--output-format",
                "json",
                "-z",
                &duration,
                "-c",
                &conns,
                "-m",
                "POST",
                "-T",
                "application/json",
                "-H",
                &accept,
                "-D",
                &body_file,
            ];
            if let Some(rate) = &rate {
                args.extend(["-q", rate]);
            }
            args.push(&url);
            let cmd = match governed {
                Some(env) => env.governed_program(self.oha, &args),
                None => with_nofile(self.oha, &args),
            };
            let (proxy0, backend0) = (cpu_ticks(proxy_pids), cpu_ticks(backend_pids));
            let result = run_process(self.env, cmd, Duration::from_secs(self.params.seconds + 60));
            let (proxy1, backend1) = (cpu_ticks(proxy_pids), cpu_ticks(backend_pids));
            let parsed = result.and_then(|(shown, stdout, _)| {
                OhaResult::parse(&stdout).with_context(|| format!("the output of {shown}"))
            });
            let o = match parsed {
                Ok(o) => o,
                Err(e) => {
                    println!("bench:   {what} failed: {e:#}");
                    run.errors.push(format!("{what}: {e:#}"));
                    continue;
                }
            };
            run.ok_calls += o.ok;
            let key = |k: &str| -> &'static str {
                match (prefix, k) {
                    ("", "p50") => "p50",
                    ("", "p99") => "p99",
                    ("", "rps") => "rps",
                    ("", "cpu_proxy") => "cpu_proxy",
                    ("", "cpu_backend") => "cpu_backend",
                    (_, "p50") => "max_p50",
                    (_, "p99") => "max_p99",
                    (_, "rps") => "max_rps",
                    (_, "cpu_proxy") => "max_cpu_proxy",
                    _ => "max_cpu_backend",
                }
            };
            run.values.insert(key("p50"), o.p50_us);
            run.values.insert(key("p99"), o.p99_us);
            run.values.insert(key("rps"), o.rps);
            let per_call = |ticks: u64| ticks as f64 / self.tick * 1e6 / o.ok.max(1) as f64;
            if !proxy_pids.is_empty() {
                run.values
                    .insert(key("cpu_proxy"), per_call(proxy1 - proxy0));
            }
            run.values
                .insert(key("cpu_backend"), per_call(backend1 - backend0));
            if !o.problems.is_empty() {
                run.errors
                    .push(format!("{what}: {}", o.problems.join("; ")));
            }
            println!(
                "bench:   {what}: p50 {} µs, p99 {} µs, {} req/s{}",
                fmt_num(o.p50_us),
                fmt_num(o.p99_us),
                fmt_num(o.rps),
                if proxy_pids.is_empty() {
                    String::new()
                } else {
                    format!(", proxy CPU {} µs/call", fmt_num(per_call(proxy1 - proxy0)))
                }
            );
        }
    }
}

/// What the part takes from oha's JSON.
pub(super) struct OhaResult {
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) rps: f64,
    /// Responses with status 200.
    pub(super) ok: u64,
    /// Anything that makes the numbers suspect.
    pub(super) problems: Vec<String>,
}

impl OhaResult {
    pub(super) fn parse(text: &str) -> Result<OhaResult> {
        let v = json::parse(text)?;
        let num = |path: &[&str]| {
            v.path(path)
                .and_then(json::Value::as_f64)
                .with_context(|| format!("no {} in oha's output", path.join(".")))
        };
        let mut problems = Vec::new();
        let mut ok = 0;
        if let Some(json::Value::Obj(codes)) = v.path(&["statusCodeDistribution"]) {
            for (code, n) in codes {
                let n = n.as_f64().unwrap_or(0.0) as u64;
                if code == "200" {
                    ok = n;
                } else {
                    problems.push(format!("{n} responses with status {code}"));
                }
            }
        }
        if let Some(json::Value::Obj(errors)) = v.path(&["errorDistribution"]) {
            for (error, n) in errors {
                if error != DEADLINE_ABORT {
                    problems.push(format!("{} × {error}", n.as_f64().unwrap_or(0.0)));
                }
            }
        }
        ensure!(ok > 0, "no successful call ({})", problems.join("; "));
        let size = num(&["summary", "sizePerRequest"])?;
        if size.round() as usize != REPLY_BYTES {
            problems.push(format!(
                "replies of {size} bytes on average, not {REPLY_BYTES}"
            ));
        }
        Ok(OhaResult {
            p50_us: num(&["latencyPercentiles", "p50"])? * 1e6,
            p99_us: num(&["latencyPercentiles", "p99"])? * 1e6,
            rps: num(&["summary", "requestsPerSec"])?,
            ok,
            problems,
        })
    }
}

/// The bench agent's counters from the daemon's /metrics.
pub(super) fn mcp_counters(daemon: &Daemon) -> McpCounters {
    // A request's record is written when its response ends.
    thread::sleep(Duration::from_millis(300));
    let text = http_get(daemon.env.metrics, "/metrics").unwrap_or_default();
    let mut c = McpCounters::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let value = value.trim().parse::<f64>().map_or(0, |v| v as u64);
        let label = |k: &str| {
            let start = labels.find(&format!("{k}=\""))? + k.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(&labels[start..end])
        };
        if label("agent") != Some(AGENT) {
            continue;
        }
        match name {
            "mesh_tool_calls_total"
                if label("tool") == Some(TOOL) && label("decision") == Some("allow") =>
            {
                c.tool_calls += value;
            }
            "mesh_requests_total" => {
                if label("protocol") == Some("mcp") && label("decision") == Some("allow") {
                    c.mcp_allowed += value;
                } else {
                    c.other += value;
                }
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_stated_sizes() {
        let req = request_body();
        let args_at = req.find(r#""arguments":"#).unwrap() + r#""arguments":"#.len();
        // `{"jsonrpc"…"arguments":ARGS}}`
        assert_eq!(req.len() - args_at - 2, ARGS_BYTES);
        assert!(req.contains(r#""method":"tools/call""#));
        let reply = reply_body();
        assert_eq!(reply.len(), REPLY_BYTES);
        assert!(!reply.contains(['\'', '\\', '$']));
        json::parse(&req).unwrap();
        json::parse(&reply).unwrap();
    }

    #[test]
    fn reads_oha_json() {
        let text = r#"{
  "summary": {"successRate": 1.0, "requestsPerSec": 97140.4, "sizePerRequest": 1024},
  "latencyPercentiles": {"p50": 0.00003454, "p99": 0.000121197},
  "statusCodeDistribution": {"200": 69285},
  "errorDistribution": {"aborted due to deadline": 3, "connect: refused, os error 111": 2}
}"#;
        let o = OhaResult::parse(text).unwrap();
        assert!((o.p50_us - 34.54).abs() < 1e-6);
        assert!((o.p99_us - 121.197).abs() < 1e-6);
        assert_eq!(o.ok, 69285);
        assert_eq!(o.rps, 97140.4);
        assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
        assert!(OhaResult::parse(r#"{"statusCodeDistribution":{}}"#).is_err());
    }

    #[test]
    fn json_edge_cases() {
        let v = json::parse(r#"{"a":[1,-2.5e3,true,null,"x\"\u00e9"],"b":{}}"#).unwrap();
        assert_eq!(v.path(&["b"]), Some(&json::Value::Obj(vec![])));
        let json::Value::Arr(items) = v.path(&["a"]).unwrap() else {
            panic!()
        };
        assert_eq!(items[1], json::Value::Num(-2500.0));
        assert_eq!(items[4], json::Value::Str("x\"é".into()));
        assert!(json::parse("{").is_err());
        assert!(json::parse("[1] x").is_err());
    }
}
