//! The policy-decision part of `cargo xtask bench` (docs/benchmarks.md).
//!
//! In-process numbers, no daemon and no network: the divan benchmark
//! `mesh-agent/benches/policy.rs` (`cargo bench -p mesh-agent --bench
//! policy`), which times the policy engine's decision for a `tools/call`
//! against 1,000 agents x 50 rules and the load of that whole set, and the
//! allocation test `mesh-agent/tests/policy_alloc.rs`, which checks that an
//! allowed decision makes no heap allocation. divan prints a table only (no
//! machine-readable output in 0.1), so this part reads that table.
use super::*;

const BENCH_FILE: &str = "mesh-agent/benches/policy.rs";
const ALLOC_TEST_FILE: &str = "mesh-agent/tests/policy_alloc.rs";
/// The benchmarks of `BENCH_FILE`, in report order, with what each times.
const ALLOWED: &str = "decide_allowed_tool_call";
const REFUSED: &str = "decide_refused_tool_call";
const RELOAD: &str = "reload_1000_agents";
const BENCHMARKS: [(&str, &str); 3] = [
    (ALLOWED, "decision: allowed `tools/call`"),
    (REFUSED, "decision: refused `tools/call`"),
    (RELOAD, "reload: load and compile the whole set"),
];
/// The test of `ALLOC_TEST_FILE`.
const ALLOC_TEST: &str = "allowed_tool_call_decision_does_not_allocate";
/// The issue's target for the allowed decision's median, in ns.
const DECISION_P50_TARGET_NS: f64 = 1000.0;
/// Both include compiling (the bench profile, a debug test build).
const BENCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const TEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Lines of a failed command's output kept in the report.
const OUTPUT_LINES: usize = 40;

/// One row of divan's table; times per call (per iteration), in ns.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DivanRow {
    name: String,
    fastest_ns: f64,
    slowest_ns: f64,
    median_ns: f64,
    mean_ns: f64,
    samples: u64,
    /// Calls over all samples.
    iters: u64,
}

/// What divan printed: its timer's precision and the table.
#[derive(Debug, Default)]
struct DivanOutput {
    timer_precision_ns: Option<f64>,
    rows: Vec<DivanRow>,
}

/// The allocation test's outcome.
pub(super) enum AllocTest {
    /// It ran and passed: cargo's `test result:` line.
    Passed { summary: String },
    /// It ran and an assertion failed: the end of its output.
    Failed { output: String },
    /// It did not run (build failure, crash, timeout, no such test).
    NotRun { error: String },
}

pub(super) struct PolicyPart {
    rows: Vec<DivanRow>,
    timer_precision_ns: Option<f64>,
    /// Why the benchmark gave no (or incomplete) numbers.
    bench_errors: Vec<String>,
    alloc: AllocTest,
    rustc_version: String,
    pub(super) elapsed: Duration,
    /// CPU other work used meanwhile, % of the machine.
    pub(super) other_cpu: Option<OtherCpu>,
}

impl PolicyPart {
    /// A measurement could not be made (not: a target was missed).
    pub(super) fn failed(&self) -> bool {
        !self.bench_errors.is_empty() || matches!(self.alloc, AllocTest::NotRun { .. })
    }

    pub(super) fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .bench_errors
            .iter()
            .map(|e| format!("policy benchmark: {e}"))
            .collect();
        if let AllocTest::NotRun { error } = &self.alloc {
            out.push(format!("policy allocation test: {error}"));
        }
        out
    }

    fn row(&self, name: &str) -> Option<&DivanRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

pub(super) fn run(env: &Env) -> PolicyPart {
    let started = Instant::now();
    let part_cpu = CpuSample::take();
    let rustc_version = command_line("rustc", &["--version"]);

    println!("bench: policy decisions ({BENCH_FILE})");
    let mut bench_errors = Vec::new();
    let divan = match run_divan(env) {
        Ok(d) => d,
        Err(e) => {
            bench_errors.push(format!("{e:#}"));
            DivanOutput::default()
        }
    };
    if bench_errors.is_empty() {
        for (name, _) in BENCHMARKS {
            match divan.rows.iter().find(|r| r.name == name) {
                Some(r) => println!(
                    "bench:   {name}: median {}, mean {}",
                    fmt_duration(r.median_ns),
                    fmt_duration(r.mean_ns)
                ),
                None => bench_errors.push(format!(
                    "no `{name}` row in divan's output (see policy-bench.log)"
                )),
            }
        }
    }

    println!("bench: policy allocation test ({ALLOC_TEST_FILE})");
    let alloc = run_alloc_test(env);
    match &alloc {
        AllocTest::Passed { summary } => println!("bench:   passed ({summary})"),
        AllocTest::Failed { .. } => println!("bench:   FAILED (see policy-alloc.log)"),
        AllocTest::NotRun { error } => println!("bench:   did not run: {error}"),
    }

    PolicyPart {
        rows: divan.rows,
        timer_precision_ns: divan.timer_precision_ns,
        bench_errors,
        alloc,
        rustc_version,
        elapsed: started.elapsed(),
        other_cpu: part_cpu.other_pct(),
    }
}

/// Builds, then runs the divan benchmark (bench profile, no colours) and
/// reads its table. Built first so that compiling does not run alongside
/// the timed part.
fn run_divan(env: &Env) -> Result<DivanOutput> {
    let mut build = cargo();
    build
        .args(["bench", "-p", "mesh-agent", "--bench", "policy", "--no-run"])
        .env("CARGO_TERM_COLOR", "never");
    let log = env.dir.join("policy-build.log");
    let (status, _, stderr) = run_captured(build, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "building the benchmark failed ({status}):\n{}",
        tail(&stderr, OUTPUT_LINES)
    );

    let mut bench = cargo();
    bench
        .args([
            "bench",
            "-p",
            "mesh-agent",
            "--bench",
            "policy",
            "--",
            "--color",
            "never",
        ])
        .env("CARGO_TERM_COLOR", "never")
        .env("NO_COLOR", "1");
    let log = env.dir.join("policy-bench.log");
    let (status, stdout, stderr) = run_captured(bench, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "the benchmark failed ({status}):\n{}",
        tail(&format!("{stdout}\n{stderr}"), OUTPUT_LINES)
    );
    let mut divan = parse_divan(&stdout)?;
    // divan prints its timer's precision on stderr.
    if divan.timer_precision_ns.is_none() {
        divan.timer_precision_ns = timer_precision(&stderr)?;
    }
    ensure!(
        !divan.rows.is_empty(),
        "no benchmark rows in divan's output:\n{}",
        tail(&stdout, OUTPUT_LINES)
    );
    Ok(divan)
}

/// Runs the allocation test (`cargo test`, the debug build its command
/// states) and classifies the outcome.
fn run_alloc_test(env: &Env) -> AllocTest {
    let mut test = cargo();
    test.args([
        "test",
        "-p",
        "mesh-agent",
        "--test",
        "policy_alloc",
        "--",
        "--color",
        "never",
    ])
    .env("CARGO_TERM_COLOR", "never");
    let log = env.dir.join("policy-alloc.log");
    match run_captured(test, TEST_TIMEOUT, &log) {
        Ok((status, stdout, stderr)) => classify_test(status.success(), &stdout, &stderr),
        Err(e) => AllocTest::NotRun {
            error: format!("{e:#}"),
        },
    }
}

/// What cargo's `test result:` line and the exit status say: passed only
/// if `ALLOC_TEST` itself ran and passed, failed if it ran and failed.
fn classify_test(success: bool, stdout: &str, stderr: &str) -> AllocTest {
    let result = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .map(str::trim);
    let ran = |outcome: &str| {
        stdout
            .lines()
            .any(|l| l.trim() == format!("test {ALLOC_TEST} ... {outcome}"))
    };
    match result {
        Some(summary) if success && ran("ok") => AllocTest::Passed {
            // `test result: ok. 1 passed; 0 failed; …; finished in 0.00s`
            summary: summary
                .trim_start_matches("test result: ok.")
                .split(';')
                .map(str::trim)
                .filter(|s| !s.starts_with("finished in"))
                .collect::<Vec<_>>()
                .join(", "),
        },
        Some(_) if !success && ran("FAILED") => AllocTest::Failed {
            output: tail(stdout, OUTPUT_LINES),
        },
        Some(summary) => AllocTest::NotRun {
            error: format!("`{ALLOC_TEST}` did not run ({summary})"),
        },
        None => AllocTest::NotRun {
            error: format!(
                "no test result (exit {}):\n{}",
                if success { "success" } else { "failure" },
                tail(&format!("{stdout}\n{stderr}"), OUTPUT_LINES)
            ),
        },
    }
}

/// Runs `cmd` to its end, or kills it and what it started (by pid) after
/// `timeout`; its exit status and output, which is also written to `log`.
pub(super) fn run_captured(
    mut cmd: Command,
    timeout: Duration,
    log: &Path,
) -> Result<(std::process::ExitStatus, String, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = display_cmd(&cmd);
    eprintln!("+ {shown}");
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // cargo does not pass its death on to the benchmark it runs.
            kill_descendants(child.id());
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    std::fs::write(
        log,
        format!("$ {shown}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"),
    )
    .with_context(|| format!("write {}", log.display()))?;
    match status {
        Some(s) => Ok((s, stdout, stderr)),
        None => bail!(
            "timed out after {} s: {shown}\n{}",
            timeout.as_secs(),
            tail(&stderr, 10)
        ),
    }
}

/// SIGKILL to every descendant of `pid` (a process this run started), by
/// pid, deepest first.
fn kill_descendants(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    let children: Vec<u32> = tasks
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    for child in children {
        kill_descendants(child);
        signal(child, "KILL");
    }
}

/// Reads divan's table:
///
/// ```text
/// Timer precision: 26 ns
/// policy                       fastest       │ slowest       │ median        │ mean          │ samples │ iters
/// ├─ decide_allowed_tool_call  84.19 ns      │ 274.7 ns      │ 89.02 ns      │ 116.7 ns      │ 1000    │ 100000
/// ╰─ reload_1000_agents        112.9 ms      │ 185.3 ms      │ 125.1 ms      │ 137.6 ms      │ 10      │ 10
/// ```
///
/// A row is a tree branch (`├─` / `╰─`, at any depth) with six columns;
/// group headers (a name only) and counter lines are skipped.
fn parse_divan(stdout: &str) -> Result<DivanOutput> {
    let mut out = DivanOutput {
        timer_precision_ns: timer_precision(stdout)?,
        rows: Vec::new(),
    };
    for line in stdout.lines() {
        let Some(at) = line.find("├─ ").or_else(|| line.find("╰─ ")) else {
            continue;
        };
        let branch = &line[at + "├─ ".len()..];
        let columns: Vec<&str> = branch.split('│').map(str::trim).collect();
        let [first, slowest, median, mean, samples, iters] = columns[..] else {
            continue;
        };
        let Some((name, fastest)) = first.split_once(char::is_whitespace) else {
            // A group's header: its name, empty columns.
            ensure!(
                columns[1..].iter().all(|c| c.is_empty()),
                "divan row without times: {line:?}"
            );
            continue;
        };
        let row = DivanRow {
            name: name.to_owned(),
            fastest_ns: parse_time(fastest.trim())?,
            slowest_ns: parse_time(slowest)?,
            median_ns: parse_time(median)?,
            mean_ns: parse_time(mean)?,
            samples: samples
                .parse()
                .with_context(|| format!("divan samples {samples:?}"))?,
            iters: iters
                .parse()
                .with_context(|| format!("divan iters {iters:?}"))?,
        };
        out.rows.push(row);
    }
    Ok(out)
}

/// divan's `Timer precision: 26 ns` line, if `text` has one.
pub(super) fn timer_precision(text: &str) -> Result<Option<f64>> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Timer precision:"))
        .map(|p| parse_time(p.trim()))
        .transpose()
}

/// `84.19 ns`, `1.018 µs`, `125.1 ms`, `2 s` … as ns.
pub(super) fn parse_time(text: &str) -> Result<f64> {
    let (number, unit) = text
        .split_once(char::is_whitespace)
        .with_context(|| format!("not a divan time: {text:?}"))?;
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("not a divan time: {text:?}"))?;
    let ns_per_unit = match unit.trim() {
        "ps" => 1e-3,
        "ns" => 1.0,
        // divan writes the micro sign (U+00B5); accept the Greek mu and ASCII too.
        "µs" | "μs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        other => bail!("unknown time unit {other:?} in {text:?}"),
    };
    Ok(value * ns_per_unit)
}

/// A duration in ns, in the unit that suits it.
pub(super) fn fmt_duration(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// "1000 samples x 100 calls" from a row.
fn sampling(row: &DivanRow) -> String {
    let per_sample = row.iters.checked_div(row.samples).unwrap_or(0);
    format!(
        "{} sample{} x {per_sample} call{}",
        row.samples,
        if row.samples == 1 { "" } else { "s" },
        if per_sample == 1 { "" } else { "s" },
    )
}

pub(super) fn render(d: &mut String, part: &PolicyPart) {
    let _ = writeln!(d, "## Policy decisions\n");
    let _ = writeln!(d, "### Method\n");
    let sampled = |name: &str| part.row(name).map_or_else(|| "n/a".into(), sampling);
    let _ = writeln!(
        d,
        "In-process, no I/O: the divan benchmark `{BENCH_FILE}`, run with \
         `cargo bench -p mesh-agent --bench policy -- --color never` (the bench profile: the workspace's \
         release settings; {}), one thread, after building it. The policy set: 1,000 agents with 50 rules \
         each (10 egress entries; 4 MCP servers with 6 tool globs, a grant and a resource glob each; an \
         LLM entry with 4 model globs), generated as YAML texts the way an operator writes them and loaded \
         with `PolicySet::from_files`. Timed:\n\n\
         - **`{ALLOWED}`**: `PolicySet::decide` for a `tools/call` of `get_ticket` by `agent-500` (in the \
         middle of the set) to one of its MCP servers, allowed through its `read` grant (the benchmark checks \
         the decision is allow before timing); {};\n\
         - **`{REFUSED}`**: the same call of `delete_ticket`, refused by a deny glob (a refusal formats \
         its reason); {};\n\
         - **`{RELOAD}`**: parsing and compiling the whole set from its 1,000 YAML texts, the work of a \
         policy reload less reading the files; {}.\n",
        if part.rustc_version.is_empty() {
            "rustc version unknown"
        } else {
            &part.rustc_version
        },
        sampled(ALLOWED),
        sampled(REFUSED),
        sampled(RELOAD),
    );
    let _ = writeln!(
        d,
        "divan times each sample of consecutive calls and divides by its calls; fastest, slowest, median \
         and mean are over the samples, so the median is the median sample's time per call. Timer \
         precision, as divan measured it: {}. Other work shares the machine (see Machine above). Then the \
         allocation test `{ALLOC_TEST_FILE}` (`cargo test -p mesh-agent --test policy_alloc`, debug build): a \
         counting global allocator counts the allocations made on the test's thread during one allowed \
         `tools/call` decision (deny globs, class, grant, no `when` conditions) and one `visible()` check, \
         on a two-server policy, and checks that it does count those of a refusal.\n",
        part.timer_precision_ns
            .map_or_else(|| "not reported".into(), fmt_duration),
    );

    let _ = writeln!(d, "### Results\n");
    let _ = writeln!(
        d,
        "| benchmark | median | mean | fastest | slowest | samples x calls |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|");
    for (name, what) in BENCHMARKS {
        match part.row(name) {
            Some(r) => {
                let _ = writeln!(
                    d,
                    "| {what} (`{name}`) | {} | {} | {} | {} | {} |",
                    fmt_duration(r.median_ns),
                    fmt_duration(r.mean_ns),
                    fmt_duration(r.fastest_ns),
                    fmt_duration(r.slowest_ns),
                    sampling(r),
                );
            }
            None => {
                let _ = writeln!(
                    d,
                    "| {what} (`{name}`) | n/a | n/a | n/a | n/a | not measured |"
                );
            }
        }
    }
    let _ = writeln!(d);

    let _ = writeln!(d, "### Targets\n");
    let _ = writeln!(d, "| target | measured | |");
    let _ = writeln!(d, "|---|---|---|");
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let allowed_median = part.row(ALLOWED).map(|r| r.median_ns);
    let _ = writeln!(
        d,
        "| decision p50 at most {} µs: allowed `tools/call`, 1,000 agents x 50 rules | {} | {} |",
        DECISION_P50_TARGET_NS / 1e3,
        allowed_median.map_or_else(
            || "n/a".into(),
            |m| format!("{} (median sample)", fmt_duration(m))
        ),
        verdict(allowed_median.map(|m| m <= DECISION_P50_TARGET_NS)),
    );
    let (alloc_measured, alloc_ok) = match &part.alloc {
        AllocTest::Passed { summary } => (format!("`{ALLOC_TEST}` passed ({summary})"), Some(true)),
        AllocTest::Failed { .. } => (format!("`{ALLOC_TEST}` failed (output below)"), Some(false)),
        AllocTest::NotRun { .. } => ("the test did not run (see Problems)".to_owned(), None),
    };
    let _ = writeln!(
        d,
        "| no allocation on the allow path | {alloc_measured} | {} |",
        verdict(alloc_ok)
    );
    let _ = writeln!(
        d,
        "| reload of the whole set | {} | no target; reported only |",
        part.row(RELOAD).map_or_else(
            || "n/a".into(),
            |r| format!("{} (median)", fmt_duration(r.median_ns))
        ),
    );
    let _ = writeln!(d);
    if let AllocTest::Failed { output } = &part.alloc {
        let _ = writeln!(
            d,
            "The allocation test's output (last {OUTPUT_LINES} lines):\n\n```text\n{}\n```\n",
            output.replace("```", "'''")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIVAN: &str = "Timer precision: 26 ns
policy                       fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ decide_allowed_tool_call  84.19 ns      │ 274.7 ns      │ 89.02 ns      │ 116.7 ns      │ 1000    │ 100000
├─ decide_refused_tool_call  260.5 ns      │ 1.018 µs      │ 284.3 ns      │ 359.5 ns      │ 1000    │ 100000
╰─ reload_1000_agents        112.9 ms      │ 185.3 ms      │ 125.1 ms      │ 137.6 ms      │ 10      │ 10
";

    #[test]
    fn reads_divan_table() {
        let out = parse_divan(DIVAN).unwrap();
        assert_eq!(out.timer_precision_ns, Some(26.0));
        assert_eq!(out.rows.len(), 3);
        let refused = &out.rows[1];
        assert_eq!(refused.name, REFUSED);
        assert!((refused.slowest_ns - 1018.0).abs() < 1e-6);
        assert!((refused.median_ns - 284.3).abs() < 1e-9);
        assert_eq!((refused.samples, refused.iters), (1000, 100000));
        let reload = &out.rows[2];
        assert_eq!(reload.name, RELOAD);
        assert!((reload.mean_ns - 137.6e6).abs() < 1e-3);
        assert_eq!(sampling(reload), "10 samples x 1 call");
        assert_eq!(sampling(&out.rows[0]), "1000 samples x 100 calls");
    }

    #[test]
    fn reads_nested_rows_and_skips_group_headers() {
        let text = "group          fastest │ slowest │ median │ mean │ samples │ iters
├─ inner                    │         │        │      │         │
│  ╰─ leaf      1 s        │ 2 s     │ 1.5 s  │ 1 s  │ 3       │ 3
╰─ tiny         500 ps     │ 1 ns    │ 600 ps │ 700 ps │ 1     │ 1
";
        let out = parse_divan(text).unwrap();
        let names: Vec<&str> = out.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["leaf", "tiny"]);
        assert_eq!(out.rows[0].median_ns, 1.5e9);
        assert!((out.rows[1].fastest_ns - 0.5).abs() < 1e-12);
        assert_eq!(out.timer_precision_ns, None);
        let stderr = "     Running benches/policy.rs (target/release/deps/policy-e56a)\nTimer precision: 1.5 µs\n";
        assert_eq!(timer_precision(stderr).unwrap(), Some(1500.0));
        assert_eq!(timer_precision("Running").unwrap(), None);
    }

    #[test]
    fn rejects_unknown_units() {
        assert!(parse_time("3 fortnights").is_err());
        assert!(parse_time("12").is_err());
        assert!(parse_time("x ns").is_err());
        assert_eq!(parse_time("2.5 μs").unwrap(), 2500.0);
        assert!(parse_divan("╰─ bad  1 yr │ 1 ns │ 1 ns │ 1 ns │ 1 │ 1").is_err());
    }

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_duration(89.02), "89.0 ns");
        assert_eq!(fmt_duration(1018.0), "1.02 µs");
        assert_eq!(fmt_duration(125.1e6), "125.1 ms");
        assert_eq!(fmt_duration(2.5e9), "2.50 s");
    }

    #[test]
    fn classifies_the_allocation_test() {
        let passed = format!(
            "running 1 test\ntest {ALLOC_TEST} ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored\n"
        );
        assert!(matches!(
            classify_test(true, &passed, ""),
            AllocTest::Passed { summary } if summary == "1 passed, 0 failed, 0 ignored"
        ));
        let failed = format!(
            "running 1 test\ntest {ALLOC_TEST} ... FAILED\n\nfailures:\n  an allowed tools/call allocated 2 times\n\ntest result: FAILED. 0 passed; 1 failed\n"
        );
        assert!(matches!(
            classify_test(false, &failed, ""),
            AllocTest::Failed { output } if output.contains("allocated 2 times")
        ));
        let filtered = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored\n";
        assert!(matches!(
            classify_test(true, filtered, ""),
            AllocTest::NotRun { .. }
        ));
        assert!(matches!(
            classify_test(false, "", "error[E0425]: cannot find value"),
            AllocTest::NotRun { error } if error.contains("E0425")
        ));
    }
}
