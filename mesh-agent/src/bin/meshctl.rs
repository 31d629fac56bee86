//! `meshctl`: the operator CLI, a client of the daemon's admin socket.
//! Exit codes: 0 ok, 1 refused or failed, 2 usage error, 3 daemon unreachable.
use std::{
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use mesh_agent::{
    admin::{
        api::{self, *},
        client::{AdminClient, ClientError},
    },
    config::DEFAULT_ADMIN_SOCKET,
    policy::{ExplainQuery, Explanation, PolicySet},
    records::ConnectionRecord,
};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "mesh operator CLI")]
struct Cli {
    /// The daemon's admin socket.
    #[arg(long, global = true, env = "MESH_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Agents, governed cgroups, kernel counters and quarantine state.
    Status,
    /// Run CMD as agent NAME in a fresh governed cgroup; exits with CMD's code.
    Exec {
        #[arg(long)]
        agent: String,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Govern a cgroup (and its subtree) as an agent.
    Tag {
        cgroup: String,
        #[arg(long)]
        agent: String,
    },
    /// Stop governing a cgroup.
    Untag { cgroup: String },
    /// Refuse new connects and stop traffic of an agent or a cgroup, in the kernel.
    Quarantine { target: String },
    /// Lift a quarantine.
    Release { target: String },
    /// Internal: the first stage of `exec`.
    #[command(hide = true)]
    ExecGate {
        #[arg(long)]
        fd: i32,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Check, reload and explain policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Connection records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Budgets: spend against the policy's limits.
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// Per agent and budget: used (settled in the window), reserved (calls
    /// in flight), remaining, window.
    Show {
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The most recent connection records.
    Tail {
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the policy files of DIR without a daemon; lists every error
    /// as file:line:col: message.
    Check { dir: PathBuf },
    /// Make the daemon reload its policy directory now.
    Reload,
    /// Which rule would decide a tool call, against the policy in force;
    /// exits 0 when it would be allowed, 1 when refused or held.
    Explain {
        #[arg(long)]
        agent: String,
        /// An MCP server's name in the agent's policy, or its host:port.
        #[arg(long)]
        server: String,
        #[arg(long)]
        tool: String,
        /// The call's arguments, a JSON object (for `when` conditions).
        #[arg(long, value_parser = parse_args_json)]
        args: Option<serde_json::Value>,
    },
}

/// `--args`: a JSON object; a parse error is a usage error (exit 2).
fn parse_args_json(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err("expected a JSON object, e.g. '{\"amount\": 10}'".into());
    }
    Ok(value)
}

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::from(match e {
                ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
                _ => EXIT_FAILED,
            })
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("meshctl: {e}"),
    }
}

async fn run(cli: &Cli) -> Result<ExitCode, ClientError> {
    let client = AdminClient::new(&cli.socket);
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Status => {
            let s: StatusResponse = client.get(api::STATUS).await?;
            if json {
                print_json(&s);
            } else {
                print_status(&s);
            }
        }
        Command::Tag { cgroup, agent } => {
            let r: CgroupResponse = client
                .post(
                    api::TAG,
                    &TagRequest {
                        cgroup: cgroup.clone(),
                        agent: agent.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!("tagged {} (id {}) as agent {agent}", r.cgroup, r.cgroup_id);
            }
        }
        Command::Untag { cgroup } => {
            let r: CgroupResponse = client
                .post(
                    api::UNTAG,
                    &CgroupRequest {
                        cgroup: cgroup.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!("untagged {}", r.cgroup);
            }
        }
        Command::Quarantine { target } | Command::Release { target } => {
            let (path, verb) = match cli.command {
                Command::Quarantine { .. } => (api::QUARANTINE, "quarantined"),
                _ => (api::RELEASE, "released"),
            };
            let r: TargetResponse = client
                .post(
                    path,
                    &TargetRequest {
                        target: target.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "{verb} {} ({} cgroup{})",
                    r.target,
                    r.cgroups_changed,
                    plural(r.cgroups_changed)
                );
            }
        }
        Command::Audit {
            command: AuditCommand::Tail { n },
        } => {
            let r: RecordsResponse = client.get(&format!("{}?n={n}", api::RECORDS)).await?;
            if json {
                print_json(&r);
            } else {
                print_records(&r.records);
            }
        }
        Command::Budget {
            command: BudgetCommand::Show { agent },
        } => {
            let path = match agent {
                Some(a) => format!("{}?agent={a}", api::BUDGETS),
                None => api::BUDGETS.to_owned(),
            };
            let r: BudgetsResponse = client.get(&path).await?;
            if json {
                print_json(&r);
            } else {
                print_budgets(&r);
            }
        }
        Command::Policy { command } => return policy(&client, command, json).await,
        Command::Exec { agent, cmd } => return exec(&client, agent, cmd).await,
        Command::ExecGate { fd, cmd } => return Ok(exec_gate(*fd, cmd)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn policy(
    client: &AdminClient,
    command: &PolicyCommand,
    json: bool,
) -> Result<ExitCode, ClientError> {
    match command {
        PolicyCommand::Check { dir } => Ok(policy_check(dir, json)),
        PolicyCommand::Reload => {
            let (_, r): (_, ReloadResponse) = client
                .post_accepting(
                    api::POLICY_RELOAD,
                    &serde_json::json!({}),
                    hyper::StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await?;
            if json {
                print_json(&r);
            } else if r.ok {
                println!(
                    "policy reloaded: generation {}, {} agent{}: {}",
                    r.generation,
                    r.agents.len(),
                    plural(r.agents.len()),
                    r.agents.join(", ")
                );
            } else {
                eprintln!(
                    "meshctl: policy reload refused ({} error{}); generation {} stays in force:",
                    r.errors.len(),
                    plural(r.errors.len()),
                    r.generation
                );
                for e in &r.errors {
                    eprintln!("{}", e.text);
                }
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
        PolicyCommand::Explain {
            agent,
            server,
            tool,
            args,
        } => {
            let e: Explanation = client
                .post(
                    api::POLICY_EXPLAIN,
                    &ExplainQuery {
                        agent: agent.clone(),
                        server: server.clone(),
                        tool: tool.clone(),
                        args: args.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&e);
            } else {
                println!("decision: {}", e.decision);
                println!("rule:     {}", e.rule);
                if let Some(reason) = &e.reason {
                    println!("reason:   {reason}");
                }
                if !e.steps.is_empty() {
                    println!("steps:");
                    for (i, step) in e.steps.iter().enumerate() {
                        println!("  {}. {step}", i + 1);
                    }
                }
            }
            // Scriptable: `meshctl policy explain … && deploy` in a policy
            // test passes only when the call would be allowed.
            Ok(if e.decision == "allow" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
    }
}

/// `meshctl policy check DIR`: local, no daemon.
fn policy_check(dir: &std::path::Path, json: bool) -> ExitCode {
    match PolicySet::load_dir(dir) {
        Ok(set) => {
            let agents: Vec<&str> = set.agents().collect();
            if json {
                print_json(&serde_json::json!({ "ok": true, "dir": dir, "agents": agents }));
            } else {
                println!(
                    "{}: ok, {} agent{}{}{}",
                    dir.display(),
                    agents.len(),
                    plural(agents.len()),
                    if agents.is_empty() { "" } else { ": " },
                    agents.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                let list: Vec<PolicyErrorBody> =
                    errors.0.iter().map(PolicyErrorBody::from).collect();
                print_json(&serde_json::json!({ "ok": false, "dir": dir, "errors": list }));
            } else {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!(
                    "meshctl: {} error{} in {}",
                    errors.0.len(),
                    plural(errors.0.len()),
                    dir.display()
                );
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Creates a governed cgroup through the daemon and runs CMD inside it, then
/// hands the cgroup back. CMD starts as `meshctl exec-gate`, which waits on a
/// pipe until the daemon has moved it into the cgroup and only then execs CMD
/// (same pid), so CMD's first connect is already governed. The daemon does the
/// move: cgroup v2 would not let an unprivileged caller do it.
async fn exec(client: &AdminClient, agent: &str, cmd: &[String]) -> Result<ExitCode, ClientError> {
    let r: CgroupResponse = client
        .post(
            api::EXEC,
            &ExecRequest {
                agent: agent.to_owned(),
            },
        )
        .await?;
    let status = run_gated(client, &r.cgroup, cmd).await;
    let done: Result<CgroupResponse, _> = client
        .post(
            api::EXEC_DONE,
            &CgroupRequest {
                cgroup: r.cgroup.clone(),
            },
        )
        .await;
    if let Err(e) = done {
        eprintln!("meshctl: warning: releasing cgroup {}: {e}", r.cgroup);
    }
    let status = status?;
    match status {
        Ok(s) => Ok(match (s.code(), s.signal()) {
            (Some(code), _) => ExitCode::from(code as u8),
            (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
            _ => ExitCode::from(EXIT_FAILED),
        }),
        Err(e) => {
            eprintln!("meshctl: cannot run {}: {e}", cmd[0]);
            // Like a shell: 127 when the command is not found.
            Ok(ExitCode::from(
                if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                },
            ))
        }
    }
}

/// Spawns the gate, has the daemon move it into `cgroup`, opens the gate and
/// waits for CMD.
async fn run_gated(
    client: &AdminClient,
    cgroup: &str,
    cmd: &[String],
) -> Result<std::io::Result<std::process::ExitStatus>, ClientError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds. The write end is close-on-exec, so the
    // gate sees EOF (and gives up) if meshctl dies before opening it.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), 0) } != 0 {
        return Ok(Err(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned here.
    let (gate_read, gate_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an owned fd.
    unsafe { libc::fcntl(gate_write.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => return Ok(Err(e)),
    };
    let mut child = match std::process::Command::new(me)
        .arg("exec-gate")
        .arg("--fd")
        .arg(gate_read.as_raw_fd().to_string())
        .arg("--")
        .args(cmd)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Ok(Err(e)),
    };
    drop(gate_read);
    let attached: Result<CgroupResponse, _> = client
        .post(
            api::EXEC_ATTACH,
            &AttachRequest {
                cgroup: cgroup.to_owned(),
                pid: child.id(),
            },
        )
        .await;
    if let Err(e) = attached {
        // Closing the gate unopened makes the child give up without running CMD.
        drop(gate_write);
        let _ = child.wait();
        return Err(e);
    }
    let mut gate = std::fs::File::from(gate_write);
    if let Err(e) = gate.write_all(b"g") {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Err(e));
    }
    drop(gate);
    Ok(wait_forwarding_signals(child).await)
}

/// Waits for CMD, passing on the signals meant for it, so that meshctl itself
/// lives to hand the cgroup back (Ctrl-C, `kill`, a closed terminal).
async fn wait_forwarding_signals(
    child: std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let pid = child.id() as libc::pid_t;
    let mut waiting = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        streams.push((signal(kind)?, number));
    }
    let [(int, n_int), (term, n_term), (hup, n_hup), (quit, n_quit)] = &mut streams[..] else {
        return Err(std::io::Error::other("signal setup"));
    };
    loop {
        let number = tokio::select! {
            status = &mut waiting => {
                return status.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            }
            _ = int.recv() => *n_int,
            _ = term.recv() => *n_term,
            _ = hup.recv() => *n_hup,
            _ = quit.recv() => *n_quit,
        };
        // SAFETY: signalling our own child by pid. The wait above had not
        // returned when the signal arrived; a pid is not reused in the few
        // instructions between a reap there and this call.
        unsafe { libc::kill(pid, number) };
    }
}

/// `meshctl exec-gate --fd N -- CMD…` (internal): wait for one byte on fd N,
/// then become CMD. EOF means meshctl gave up: exit without running CMD.
fn exec_gate(fd: i32, cmd: &[String]) -> ExitCode {
    let mut byte = [0u8; 1];
    // SAFETY: fd was inherited from meshctl for exactly this read.
    let gate = unsafe { OwnedFd::from_raw_fd(fd) };
    let n = std::fs::File::from(gate).read(&mut byte).unwrap_or(0);
    if n != 1 {
        eprintln!("meshctl: not started: the cgroup could not be set up");
        return ExitCode::from(EXIT_FAILED);
    }
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    eprintln!("meshctl: cannot run {}: {err}", cmd[0]);
    // Like a shell: 127 when the command is not found.
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn print_budgets(r: &BudgetsResponse) {
    let rows: Vec<_> = r
        .agents
        .iter()
        .flat_map(|a| a.budgets.iter().map(move |b| (&a.agent, b)))
        .collect();
    if rows.is_empty() {
        println!("no budgets in the policy in force");
        return;
    }
    println!(
        "{:<20} {:<16} {:<7} {:>14} {:>14} {:>14} {:>14} {:>8}  ON EXHAUST",
        "AGENT", "BUDGET", "UNIT", "USED", "RESERVED", "REMAINING", "LIMIT", "WINDOW"
    );
    for (agent, b) in rows {
        println!(
            "{:<20} {:<16} {:<7} {:>14} {:>14} {:>14} {:>14} {:>8}  {}",
            agent,
            b.name,
            b.unit,
            b.used.to_string(),
            b.reserved.to_string(),
            b.remaining.to_string(),
            b.limit.to_string(),
            window_text(b.window_secs),
            b.on_exhaust
        );
    }
}

/// `90s`, `15m`, `24h`, `7d`: the largest unit that divides it.
fn window_text(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

fn print_status(s: &StatusResponse) {
    println!(
        "mesh-agent {}  listen {}  attach {}",
        s.version,
        s.listen.join(", "),
        s.attach_cgroup
    );
    println!(
        "active connections: {}   agents with policy: {}",
        s.active_connections,
        if s.policy_agents.is_empty() {
            "none".to_owned()
        } else {
            s.policy_agents.join(", ")
        }
    );
    println!(
        "policy: generation {}, loaded {} from {}",
        s.policy_generation,
        describe_time(s.policy_loaded_unix_ms),
        s.policy_dir
    );
    println!();
    if s.agents.is_empty() {
        println!("no governed agents");
        return;
    }
    println!(
        "{:<20} {:<12} {:>7} {:>9} {:>10} {:>8} {:>12} {:>12}",
        "AGENT", "STATE", "CGROUPS", "CONNECTS", "REDIRECTED", "REFUSED", "BYTES IN", "BYTES OUT"
    );
    for a in &s.agents {
        let t = &a.totals;
        println!(
            "{:<20} {:<12} {:>7} {:>9} {:>10} {:>8} {:>12} {:>12}",
            a.name,
            if a.quarantined {
                "QUARANTINED"
            } else {
                "active"
            },
            a.cgroups.len(),
            t.connects,
            t.redirected,
            t.refused,
            t.bytes_in,
            t.bytes_out
        );
    }
    println!();
    println!("{:<20} {:<10} {:<12} CGROUP", "AGENT", "CGROUP ID", "STATE");
    for a in &s.agents {
        for c in &a.cgroups {
            println!(
                "{:<20} {:<10} {:<12} {}",
                a.name,
                c.id,
                if c.quarantined {
                    "QUARANTINED"
                } else {
                    "active"
                },
                c.path.as_deref().unwrap_or("(removed)")
            );
        }
    }
}

fn print_records(records: &[ConnectionRecord]) {
    if records.is_empty() {
        println!("no records");
        return;
    }
    println!(
        "{:<6} {:<14} {:>7} {:<22} {:<5} {:<32} {:<16} {:>8} {:>8} WHY",
        "ID", "AGENT", "PID", "DESTINATION", "PROTO", "CALL", "VERDICT", "UP", "DOWN"
    );
    for r in records {
        let call = r.call.as_ref().map_or_else(String::new, |c| {
            let mut text = c.method.clone();
            if let Some(name) = &c.name {
                text.push(' ');
                text.push_str(name);
            }
            if let Some(outcome) = &c.outcome {
                text.push_str(" -> ");
                text.push_str(outcome);
            }
            text
        });
        println!(
            "{:<6} {:<14} {:>7} {:<22} {:<5} {:<32} {:<16} {:>8} {:>8} {}",
            r.id,
            r.agent.as_deref().unwrap_or("-"),
            r.pid,
            r.original_destination.as_deref().unwrap_or("-"),
            r.protocol.map_or("tcp", |p| p.as_str()),
            call,
            serde_json::to_value(r.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.bytes_to_upstream,
            r.bytes_to_client,
            r.reason.as_deref().or(r.rule.as_deref()).unwrap_or("")
        );
    }
}

/// `2026-01-02 03:04:05 UTC (12s ago)`; no time zone database needed.
fn describe_time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "at an unknown time".into();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let now = mesh_agent::records::unix_ms(std::time::SystemTime::now());
    let ago = now.saturating_sub(unix_ms) / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC ({ago}s ago)",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn args_must_be_a_json_object() {
        assert!(parse_args_json(r#"{"a": 1}"#).is_ok());
        let err = parse_args_json("{a: 1}").unwrap_err();
        assert!(err.contains("key must be a string"), "{err}");
        assert!(parse_args_json("[1]").is_err());
    }
}
