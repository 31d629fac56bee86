//! The divan benchmarks of the pure crates (`mesh-policy/benches/policy.rs`,
//! `mesh-budget/benches/budget.rs`), as the
//! in-process parts of `cargo xtask bench` (policy, budget) run them:
//! build, run with a deadline, and read the table divan prints (divan 0.1
//! has no machine-readable output), allocation lines included; and the
//! formatting of its times for the report.
use std::ffi::OsStr;

use super::*;

/// Includes compiling (the bench profile).
pub(super) const BENCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of a failed command's output kept in an error or the report.
pub(super) const OUTPUT_LINES: usize = 40;

/// One row of divan's table; times per call (per iteration), in ns.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DivanRow {
    pub(super) name: String,
    pub(super) fastest_ns: f64,
    pub(super) slowest_ns: f64,
    pub(super) median_ns: f64,
    pub(super) mean_ns: f64,
    pub(super) samples: u64,
    /// Calls over all samples.
    pub(super) iters: u64,
    /// From divan's `alloc:` lines under the row; all zero when it printed
    /// none, which under `AllocProfiler` means the call made no allocation.
    pub(super) alloc: Allocations,
}

/// Allocations per call, as divan's `AllocProfiler` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Allocations {
    /// Count, in the median sample and the mean.
    pub(super) count_median: f64,
    pub(super) count_mean: f64,
    /// Bytes, in the median sample.
    pub(super) bytes_median: f64,
}

impl DivanRow {
    /// "1000 samples x 100 calls".
    pub(super) fn sampling(&self) -> String {
        let per_sample = self.iters.checked_div(self.samples).unwrap_or(0);
        format!(
            "{} sample{} x {per_sample} call{}",
            self.samples,
            if self.samples == 1 { "" } else { "s" },
            if per_sample == 1 { "" } else { "s" },
        )
    }

    /// The report's time columns: "median | mean | fastest | slowest".
    pub(super) fn time_columns(&self) -> String {
        format!(
            "{} | {} | {} | {}",
            fmt_duration(self.median_ns),
            fmt_duration(self.mean_ns),
            fmt_duration(self.fastest_ns),
            fmt_duration(self.slowest_ns),
        )
    }
}

/// What divan printed: its timer's precision and the table; and the
/// compiler that built the benchmark.
#[derive(Debug, Default)]
pub(super) struct DivanOutput {
    /// `rustc --version`; empty if that failed.
    pub(super) rustc_version: String,
    pub(super) timer_precision_ns: Option<f64>,
    pub(super) rows: Vec<DivanRow>,
}

impl DivanOutput {
    pub(super) fn row(&self, name: &str) -> Option<&DivanRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// "1000 samples x 100 calls" of `name`'s row, or "n/a".
    pub(super) fn sampling(&self, name: &str) -> String {
        self.row(name)
            .map_or_else(|| "n/a".into(), DivanRow::sampling)
    }

    /// One error for each of `names` the table has no row for; `log` is
    /// the file with divan's output.
    fn missing<'a>(&self, names: impl IntoIterator<Item = &'a str>, log: &str) -> Vec<String> {
        names
            .into_iter()
            .filter(|name| self.row(name).is_none())
            .map(|name| format!("no `{name}` row in divan's output (see {log})"))
            .collect()
    }

    /// The compiler for the report's method.
    pub(super) fn rustc_version_text(&self) -> &str {
        if self.rustc_version.is_empty() {
            "rustc version unknown"
        } else {
            &self.rustc_version
        }
    }

    /// The precision for the report's method: "26.0 ns" or "not reported".
    pub(super) fn timer_precision_text(&self) -> String {
        self.timer_precision_ns
            .map_or_else(|| "not reported".into(), fmt_duration)
    }
}

/// `cargo bench -p <package> --bench <bench>`, without colours.
pub(super) fn bench_command(package: &str, bench: &str) -> Command {
    let mut command = cargo();
    command
        .args(["bench", "-p", package, "--bench", bench])
        .env("CARGO_TERM_COLOR", "never")
        .env("NO_COLOR", "1");
    command
}

/// The benchmarks a part reports, in report order: (name, what it times).
pub(super) type Benchmarks<'a> = &'a [(&'a str, &'a str)];

/// A column of the Results table after the time columns: its header and
/// its cell for a row.
pub(super) type Column<'a> = (&'a str, &'a dyn Fn(&DivanRow) -> String);

/// `run`, then prints `summary` of each of `benchmarks`' rows. What could
/// not be measured (the run failed, a row is missing) goes to `errors`; the
/// output then has no or some rows (and the compiler's version all the same).
pub(super) fn run_benchmarks(
    env: &Env,
    package: &str,
    bench: &str,
    envs: &[(&str, &OsStr)],
    benchmarks: Benchmarks,
    summary: impl Fn(&DivanRow) -> String,
    errors: &mut Vec<String>,
) -> DivanOutput {
    let rustc_version = command_line("rustc", &["--version"]);
    let divan = match run(env, package, bench, envs) {
        Ok(divan) => DivanOutput {
            rustc_version,
            ..divan
        },
        Err(e) => {
            errors.push(format!("{e:#}"));
            return DivanOutput {
                rustc_version,
                ..DivanOutput::default()
            };
        }
    };
    for (name, _) in benchmarks {
        if let Some(row) = divan.row(name) {
            println!("bench:   {name}: {}", summary(row));
        }
    }
    let names = benchmarks.iter().map(|(name, _)| *name);
    errors.extend(divan.missing(names, &format!("{bench}-bench.log")));
    divan
}

/// The `### Results` section: a row for each of `benchmarks`, "what
/// (`name`)", its time columns, `extra` columns and its sampling; n/a
/// where divan gave no row.
pub(super) fn write_results(
    d: &mut String,
    divan: &DivanOutput,
    benchmarks: Benchmarks,
    extra: &[Column],
) {
    let _ = writeln!(d, "### Results\n");
    let mut header = "| benchmark | median | mean | fastest | slowest |".to_owned();
    for (title, _) in extra {
        let _ = write!(header, " {title} |");
    }
    let _ = writeln!(d, "{header} samples x calls |");
    let _ = writeln!(d, "|---|---|---|---|---|{}---|", "---|".repeat(extra.len()));
    for (name, what) in benchmarks {
        let _ = write!(d, "| {what} (`{name}`) |");
        match divan.row(name) {
            Some(r) => {
                let _ = write!(d, " {} |", r.time_columns());
                for (_, cell) in extra {
                    let _ = write!(d, " {} |", cell(r));
                }
                let _ = writeln!(d, " {} |", r.sampling());
            }
            None => {
                let _ = writeln!(d, "{} not measured |", " n/a |".repeat(4 + extra.len()));
            }
        }
    }
    let _ = writeln!(d);
}

/// Builds, then runs the divan benchmark `bench` of `package` (bench profile, no
/// colours, `envs` set for the run) and reads its table. Built first so
/// that compiling does not run alongside the timed part. Logs:
/// `<bench>-build.log` and `<bench>-bench.log` in the bench directory.
pub(super) fn run(
    env: &Env,
    package: &str,
    bench: &str,
    envs: &[(&str, &OsStr)],
) -> Result<DivanOutput> {
    let mut build = cargo();
    build
        .args(["bench", "-p", package, "--bench", bench, "--no-run"])
        .env("CARGO_TERM_COLOR", "never");
    let log = env.dir.join(format!("{bench}-build.log"));
    let (status, _, stderr) = run_captured(build, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "building the benchmark failed ({status}):\n{}",
        tail(&stderr, OUTPUT_LINES)
    );

    let mut run = bench_command(package, bench);
    run.envs(envs.iter().copied())
        .args(["--", "--color", "never"]);
    let log = env.dir.join(format!("{bench}-bench.log"));
    let (status, stdout, stderr) = run_captured(run, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "the benchmark failed ({status}):\n{}",
        tail(&format!("{stdout}\n{stderr}"), OUTPUT_LINES)
    );
    let mut divan = parse(&stdout)?;
    ensure!(
        !divan.rows.is_empty(),
        "no benchmark rows in divan's output:\n{}",
        tail(&stdout, OUTPUT_LINES)
    );
    // divan prints its timer's precision on stderr.
    if divan.timer_precision_ns.is_none() {
        divan.timer_precision_ns = timer_precision(&stderr)?;
    }
    Ok(divan)
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

/// Reads divan's table, with `AllocProfiler`'s lines when it printed them:
///
/// ```text
/// Timer precision: 26 ns
/// budget                          fastest       │ slowest       │ median        │ mean          │ samples │ iters
/// ├─ reserve_refused_in_memory    145.3 ns      │ 521.4 ns      │ 152.3 ns      │ 155.5 ns      │ 1000    │ 100000
/// │                               alloc:        │               │               │               │         │
/// │                                 1           │ 1.07          │ 1             │ 1             │         │
/// │                                 7 B         │ 14.4 B        │ 7 B           │ 7.007 B       │         │
/// ╰─ reserve_settle_in_memory     243.2 ns      │ 563.8 ns      │ 252.8 ns      │ 260.3 ns      │ 1000    │ 100000
/// ```
///
/// A row is a tree branch (`├─` / `╰─`, at any depth) with six columns; a
/// group's header is a branch with a name only. The lines under a row
/// until the next branch belong to it: a label (`alloc:`, `max alloc:`,
/// `dealloc:` …), then its count and its bytes. Only `alloc:` is kept;
/// other lines (counters) are skipped.
pub(super) fn parse(stdout: &str) -> Result<DivanOutput> {
    let mut out = DivanOutput {
        timer_precision_ns: timer_precision(stdout)?,
        ..DivanOutput::default()
    };
    // Whether the lines that follow belong to the last row (not to a
    // group's header), the label they are under, and how many came under it.
    let mut under_row = false;
    let mut label = String::new();
    let mut values_seen = 0;
    for line in stdout.lines() {
        if let Some(at) = line.find("├─ ").or_else(|| line.find("╰─ ")) {
            label.clear();
            under_row = false;
            let branch = &line[at + "├─ ".len()..];
            let columns: Vec<&str> = branch.split('│').map(str::trim).collect();
            let [first, slowest, median, mean, samples, iters] = columns[..] else {
                bail!("divan row without six columns: {line:?}");
            };
            let Some((name, fastest)) = first.split_once(char::is_whitespace) else {
                // A group's header: its name, empty columns.
                ensure!(
                    columns[1..].iter().all(|c| c.is_empty()),
                    "divan row without times: {line:?}"
                );
                continue;
            };
            out.rows.push(DivanRow {
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
                alloc: Allocations::default(),
            });
            under_row = true;
            continue;
        }
        let Some(row) = out.rows.last_mut().filter(|_| under_row) else {
            continue;
        };
        let body = line.trim_start_matches(|c: char| c == '│' || c.is_whitespace());
        let columns: Vec<&str> = body.split('│').map(str::trim).collect();
        let [first, _slowest, median, mean, ..] = columns[..] else {
            continue;
        };
        if let Some(name) = first.strip_suffix(':') {
            label = name.to_owned();
            values_seen = 0;
            continue;
        }
        if label != "alloc" {
            continue;
        }
        values_seen += 1;
        match values_seen {
            1 => {
                row.alloc.count_median = parse_count(median)?;
                row.alloc.count_mean = parse_count(mean)?;
            }
            2 => row.alloc.bytes_median = parse_bytes(median)?,
            _ => {}
        }
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

/// `1`, `2.03`, `1.5 K` (divan scales counts like bytes).
fn parse_count(text: &str) -> Result<f64> {
    let (number, scale) = match text.split_once(char::is_whitespace) {
        Some((n, s)) => (n, s.trim()),
        None => (text, ""),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("not a divan count: {text:?}"))?;
    let factor = match scale {
        "" => 1.0,
        "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        other => bail!("unknown count scale {other:?} in {text:?}"),
    };
    Ok(value * factor)
}

/// `7 B`, `320.9 B`, `1.2 KB`.
fn parse_bytes(text: &str) -> Result<f64> {
    let (number, unit) = text
        .split_once(char::is_whitespace)
        .with_context(|| format!("not a divan size: {text:?}"))?;
    let value: f64 = number
        .parse()
        .with_context(|| format!("not a divan size: {text:?}"))?;
    let factor = match unit.trim() {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        other => bail!("unknown size unit {other:?} in {text:?}"),
    };
    Ok(value * factor)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy benchmark's table: no allocation lines.
    const POLICY: &str = "Timer precision: 26 ns
policy                       fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ decide_allowed_tool_call  84.19 ns      │ 274.7 ns      │ 89.02 ns      │ 116.7 ns      │ 1000    │ 100000
├─ decide_refused_tool_call  260.5 ns      │ 1.018 µs      │ 284.3 ns      │ 359.5 ns      │ 1000    │ 100000
╰─ reload_1000_agents        112.9 ms      │ 185.3 ms      │ 125.1 ms      │ 137.6 ms      │ 10      │ 10
";

    /// The budget benchmark's table, with `AllocProfiler`'s lines.
    const BUDGET: &str = "budget                          fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ reserve_refused_in_memory    145.3 ns      │ 521.4 ns      │ 152.3 ns      │ 155.5 ns      │ 1000    │ 100000
│                               max alloc:    │               │               │               │         │
│                                 1           │ 1.07          │ 1             │ 1             │         │
│                                 7 B         │ 14.4 B        │ 7 B           │ 7.007 B       │         │
│                               alloc:        │               │               │               │         │
│                                 1           │ 1.07          │ 1             │ 1             │         │
│                                 7 B         │ 14.4 B        │ 7 B           │ 7.007 B       │         │
├─ reserve_settle_in_memory     243.2 ns      │ 563.8 ns      │ 252.8 ns      │ 260.3 ns      │ 1000    │ 100000
╰─ reserve_settle_redb_no_wait  460.6 ns      │ 2.08 µs       │ 1.253 µs      │ 1.191 µs      │ 1000    │ 100000
                                max alloc:    │               │               │               │         │
                                  2.03        │ 2.03          │ 2.03          │ 2.032         │         │
                                  320.9 B     │ 320.9 B       │ 320.9 B       │ 328.2 B       │         │
                                alloc:        │               │               │               │         │
                                  2.03        │ 2.03          │ 2.03          │ 2.032         │         │
                                  320.9 B     │ 320.9 B       │ 320.9 B       │ 328.2 B       │         │
                                dealloc:      │               │               │               │         │
                                  5           │ 5             │ 5             │ 5             │         │
                                  1 KB        │ 1 KB          │ 1 KB          │ 1 KB          │         │
";

    #[test]
    fn reads_divan_table() {
        let out = parse(POLICY).unwrap();
        assert_eq!(out.timer_precision_ns, Some(26.0));
        assert_eq!(out.rows.len(), 3);
        let refused = &out.rows[1];
        assert_eq!(refused.name, "decide_refused_tool_call");
        assert!((refused.slowest_ns - 1018.0).abs() < 1e-6);
        assert!((refused.median_ns - 284.3).abs() < 1e-9);
        assert_eq!((refused.samples, refused.iters), (1000, 100000));
        assert_eq!(refused.alloc, Allocations::default());
        let reload = out.row("reload_1000_agents").unwrap();
        assert!((reload.mean_ns - 137.6e6).abs() < 1e-3);
        assert_eq!(reload.sampling(), "10 samples x 1 call");
        assert_eq!(out.rows[0].sampling(), "1000 samples x 100 calls");
        assert_eq!(
            out.rows[0].time_columns(),
            "89.0 ns | 116.7 ns | 84.2 ns | 274.7 ns"
        );
        assert_eq!(out.timer_precision_text(), "26.0 ns");
        assert_eq!(out.rustc_version_text(), "rustc version unknown");
        assert_eq!(out.sampling("reload_1000_agents"), "10 samples x 1 call");
        assert_eq!(out.sampling("nope"), "n/a");
        assert_eq!(
            out.missing(["reload_1000_agents", "nope"], "policy-bench.log"),
            ["no `nope` row in divan's output (see policy-bench.log)"]
        );
    }

    #[test]
    fn writes_results_table() {
        let out = parse(POLICY).unwrap();
        let benchmarks = [("reload_1000_agents", "reload"), ("nope", "missing")];
        let mut plain = String::new();
        write_results(&mut plain, &out, &benchmarks, &[]);
        assert_eq!(
            plain,
            "### Results\n\n\
             | benchmark | median | mean | fastest | slowest | samples x calls |\n\
             |---|---|---|---|---|---|\n\
             | reload (`reload_1000_agents`) | 125.1 ms | 137.6 ms | 112.9 ms | 185.3 ms | 10 samples x 1 call |\n\
             | missing (`nope`) | n/a | n/a | n/a | n/a | not measured |\n\n"
        );
        let mut extra = String::new();
        let iters = |r: &DivanRow| r.iters.to_string();
        write_results(&mut extra, &out, &benchmarks, &[("iters", &iters)]);
        assert_eq!(
            extra,
            "### Results\n\n\
             | benchmark | median | mean | fastest | slowest | iters | samples x calls |\n\
             |---|---|---|---|---|---|---|\n\
             | reload (`reload_1000_agents`) | 125.1 ms | 137.6 ms | 112.9 ms | 185.3 ms | 10 | 10 samples x 1 call |\n\
             | missing (`nope`) | n/a | n/a | n/a | n/a | n/a | not measured |\n\n"
        );
    }

    #[test]
    fn reads_divan_table_with_allocations() {
        let out = parse(BUDGET).unwrap();
        let names: Vec<&str> = out.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "reserve_refused_in_memory",
                "reserve_settle_in_memory",
                "reserve_settle_redb_no_wait"
            ]
        );
        assert_eq!(out.timer_precision_ns, None);
        assert_eq!(out.timer_precision_text(), "not reported");
        let refused = &out.rows[0];
        assert_eq!(refused.alloc.count_median, 1.0);
        assert_eq!(refused.alloc.bytes_median, 7.0);
        assert!((refused.median_ns - 152.3).abs() < 1e-9);
        // No allocation lines: none made.
        assert_eq!(out.rows[1].alloc, Allocations::default());
        assert_eq!(out.rows[1].samples, 1000);
        // The last row's lines have no tree bar; `dealloc:` is not `alloc:`.
        let redb = &out.rows[2];
        assert!((redb.alloc.count_mean - 2.032).abs() < 1e-9);
        assert!((redb.alloc.bytes_median - 320.9).abs() < 1e-9);
        assert!((redb.slowest_ns - 2080.0).abs() < 1e-6);
        assert_eq!(redb.sampling(), "1000 samples x 100 calls");
    }

    #[test]
    fn reads_nested_rows_and_skips_group_headers() {
        let text = "group          fastest │ slowest │ median │ mean │ samples │ iters
├─ inner                    │         │        │      │         │
│  ╰─ leaf      1 s        │ 2 s     │ 1.5 s  │ 1 s  │ 3       │ 3
├─ outer                    │         │        │      │         │
│                           alloc:    │        │      │         │
│                             9       │ 9      │ 9    │ 9       │
╰─ tiny         500 ps     │ 1 ns    │ 600 ps │ 700 ps │ 1     │ 1
";
        let out = parse(text).unwrap();
        let names: Vec<&str> = out.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["leaf", "tiny"]);
        assert_eq!(out.rows[0].median_ns, 1.5e9);
        // Lines under a group's header are not the previous row's.
        assert_eq!(out.rows[0].alloc, Allocations::default());
        assert!((out.rows[1].fastest_ns - 0.5).abs() < 1e-12);
        assert_eq!(out.timer_precision_ns, None);
        let stderr = "     Running benches/policy.rs (target/release/deps/policy-e56a)\nTimer precision: 1.5 µs\n";
        assert_eq!(timer_precision(stderr).unwrap(), Some(1500.0));
        assert_eq!(timer_precision("Running").unwrap(), None);
    }

    #[test]
    fn rejects_broken_rows_and_unknown_units() {
        assert!(parse("╰─ bad  1 yr │ 1 ns │ 1 ns │ 1 ns │ 1 │ 1").is_err());
        assert!(parse("├─ short  1 ns │ 1 ns").is_err());
        assert!(parse("├─ header │ 1 ns │ │ │ │").is_err());
        assert!(parse("├─ n  1 ns │ 1 ns │ 1 ns │ 1 ns │ many │ 1").is_err());
        assert!(parse_time("3 fortnights").is_err());
        assert!(parse_time("12").is_err());
        assert!(parse_time("x ns").is_err());
        assert_eq!(parse_time("2.5 μs").unwrap(), 2500.0);
        assert!(parse_count("3 X").is_err());
        assert_eq!(parse_count("1.5 K").unwrap(), 1500.0);
        assert!(parse_bytes("12").is_err());
        assert_eq!(parse_bytes("2 KiB").unwrap(), 2048.0);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_duration(89.02), "89.0 ns");
        assert_eq!(fmt_duration(1018.0), "1.02 µs");
        assert_eq!(fmt_duration(125.1e6), "125.1 ms");
        assert_eq!(fmt_duration(2.5e9), "2.50 s");
    }
}
