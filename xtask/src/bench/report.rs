//! The document: its head (machine, run), the parts in order, the daemon
//! logs and the problems; number formatting shared by the parts.
use super::*;

pub(super) struct Report<'a> {
    pub(super) params: &'a Params,
    pub(super) env: &'a Env,
    pub(super) tcp: Option<&'a TcpPart>,
    pub(super) mcp: Option<&'a mcp::McpPart>,
    pub(super) policy: Option<&'a policy::PolicyPart>,
    pub(super) budget: Option<&'a budget::BudgetPart>,
    pub(super) logs: &'a LogScan,
    pub(super) elapsed: Duration,
    pub(super) load_at_start: String,
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub(super) fn fmt_num(x: f64) -> String {
    if x >= 10_000.0 {
        // thousands separators
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub(super) fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), fmt_num)
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub(super) fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

pub(super) fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(super) fn machine() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    (cpu, nproc, kernel)
}

pub(super) fn render(rep: &Report) -> String {
    let mut d = String::new();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let (cpu, nproc, kernel) = machine();
    let git = command_line(
        "git",
        &[
            "-C",
            &repo_root().to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = !command_line(
        "git",
        &[
            "-C",
            &repo_root().to_string_lossy(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    let p = rep.params;

    let _ = writeln!(d, "# Benchmarks\n");
    let parts: Vec<String> = [
        rep.tcp.map(|t| {
            format!(
                "[opaque TCP](#opaque-tcp) {:.1} min",
                t.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.mcp.map(|m| {
            format!(
                "[MCP tools/call](#mcp-toolscall) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.policy.map(|m| {
            format!(
                "[policy decisions](#policy-decisions) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
        rep.budget.map(|m| {
            format!(
                "[budgets](#budgets) {:.1} min",
                m.elapsed.as_secs_f64() / 60.0
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    let _ = writeln!(
        d,
        "Written by `cargo xtask bench` on {date} ({:.1} min: {}); every number below comes from that one run. \
         Re-run it to refresh this file; do not edit the numbers by hand.\n",
        rep.elapsed.as_secs_f64() / 60.0,
        parts.join(", ")
    );
    if let Some(only) = p.only {
        let _ = writeln!(
            d,
            "**Partial run** (`MESH_BENCH_ONLY={}`): only that part was measured.\n",
            only.name()
        );
    }
    let overrides = daemon_overrides();
    if !overrides.is_empty() {
        let _ = writeln!(
            d,
            "**Diagnostic run** ({}): the daemon did not run with the settings the method below states.\n",
            overrides.join(", ")
        );
    }
    if !p.is_default() {
        let _ = writeln!(
            d,
            "**Shortened run** (`MESH_BENCH_REPS={}`, `MESH_BENCH_SECONDS={}`): not the standard method below.\n",
            p.reps, p.seconds
        );
    }
    let _ = writeln!(d, "## Machine\n");
    let _ = writeln!(d, "- CPU: {cpu}, {nproc} logical CPUs (`nproc`)");
    let _ = writeln!(d, "- kernel: {kernel}");
    let _ = writeln!(
        d,
        "- load average (1, 5, 15 min) when the run started: {} (while it runs, the run itself keeps it \
         near 2 or above; other work on the machine shares the CPUs)",
        rep.load_at_start,
    );
    let other: Vec<String> = [
        rep.tcp
            .and_then(|t| t.other_cpu)
            .map(|o| format!("opaque TCP part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.mcp
            .and_then(|m| m.other_cpu)
            .map(|o| format!("MCP part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.policy
            .and_then(|m| m.other_cpu)
            .map(|o| format!("policy part {:.1}% / {:.1}%", o.other, o.steal)),
        rep.budget
            .and_then(|m| m.other_cpu)
            .map(|o| format!("budget part {:.1}% / {:.1}%", o.other, o.steal)),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Only the TCP and MCP parts have per-measurement columns and daemons.
    let daemon_parts = rep.tcp.is_some() || rep.mcp.is_some();
    if !other.is_empty() {
        let _ = writeln!(
            d,
            "- CPU taken by other work while the run lasted, in % of all {nproc} CPUs: inside this machine \
             (its user + system time from /proc/stat, less this run's processes and kernel threads) / by \
             the hypervisor for others (steal time): {}{}",
            other.join(", "),
            if daemon_parts {
                "; per measurement in the \"other CPU / steal %\" columns below"
            } else {
                ""
            }
        );
    }
    if let Some(v) = rep
        .tcp
        .map(|t| t.nginx_version.as_str())
        .or(rep.mcp.map(|m| m.nginx_version.as_str()))
    {
        let _ = writeln!(d, "- nginx: {v}");
    }
    let _ = writeln!(
        d,
        "- mesh: commit {}{}, release build",
        if git.is_empty() { "unknown" } else { &git },
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(d);

    if let Some(tcp) = rep.tcp {
        render_tcp(&mut d, p, nproc, tcp);
    }
    if let Some(m) = rep.mcp {
        mcp_report::render(&mut d, p, nproc, m);
    }
    if let Some(m) = rep.policy {
        policy::render(&mut d, m);
    }
    if let Some(m) = rep.budget {
        budget::render(&mut d, m);
    }

    // Daemon logs (only the TCP and MCP parts start daemons) and problems.
    if daemon_parts {
        let _ = writeln!(d, "## Daemon log\n");
        if rep.logs.lines == 0 {
            let _ = writeln!(d, "No warnings or errors in the daemon logs of this run.\n");
        } else {
            let _ = writeln!(
                d,
                "{} warning/error lines in the daemon logs of this run ({} distinct):\n",
                rep.logs.lines,
                rep.logs.distinct.len()
            );
            for (msg, n) in rep.logs.distinct.iter().take(15) {
                let msg: String = msg.chars().take(300).collect();
                let _ = writeln!(d, "- {n}× `{}`", msg.replace('`', "'"));
            }
            let _ = writeln!(d);
        }
    }
    let no_runs: &[RunResult] = &[];
    let no_memory: &MemoryResults = &Vec::new();
    let (runs, memory) = rep
        .tcp
        .map_or((no_runs, no_memory), |t| (&t.runs[..], &t.memory));
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("rep {} {}: {e}", r.rep, r.target.label()))
        })
        .chain(runs.iter().filter_map(|r| {
            r.mesh
                .filter(|c| c.refused + c.errors > 0 || c.allowed == 0)
                .map(|c| {
                    format!(
                        "rep {} {}: the daemon counted {} allowed, {} refused, {} failed connections",
                        r.rep,
                        r.target.label(),
                        c.allowed,
                        c.refused,
                        c.errors
                    )
                })
        }))
        .chain(
            memory
                .iter()
                .filter_map(|(relay, m)| m.as_ref().err().map(|e| format!("memory ({relay}): {e:#}"))),
        )
        .chain(rep.mcp.map(mcp::McpPart::problems).unwrap_or_default())
        .chain(rep.policy.map(policy::PolicyPart::problems).unwrap_or_default())
        .chain(rep.budget.map(budget::BudgetPart::problems).unwrap_or_default())
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(d, "## Problems\n");
        for p in problems {
            let p: String = p.chars().take(600).collect();
            let _ = writeln!(d, "- {}", p.replace('\n', " "));
        }
        let _ = writeln!(d);
    }
    let _ = writeln!(
        d,
        "Logs of this run ({}) were in `{}`.",
        [
            daemon_parts.then_some("daemon, nginx, servers"),
            rep.policy.map(|_| "policy benchmark and test output"),
            rep.budget.map(|_| "budget benchmark output"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; "),
        rep.env
            .dir
            .strip_prefix(repo_root())
            .unwrap_or(&rep.env.dir)
            .display()
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_num(71567.4), "71,567");
        assert_eq!(fmt_num(123456789.0), "123,456,789");
        assert_eq!(fmt_num(159.2), "159");
        assert_eq!(fmt_num(7.25), "7.2");
    }
}
