//! The budget-ledger part of `cargo xtask bench` (docs/benchmarks.md).
//!
//! In-process numbers, no daemon and no network, from the benchmark
//! `mesh-agent/benches/budget.rs` run twice: as a divan benchmark
//! (`cargo bench -p mesh-agent --bench budget`: reserve + settle against
//! three budgets in memory and with redb, a refused reservation, and the
//! allocations per call from divan's `AllocProfiler`), then with
//! `MESH_BUDGET_GROUP_COMMIT=1` (the group commit: 1, 8 and 64 threads
//! settling and waiting for durability against one redb file). divan prints
//! a table only, so this part reads that table, allocation lines included.
use super::policy::{fmt_duration, parse_time, run_captured, timer_precision};
use super::*;

const BENCH_FILE: &str = "mesh-agent/benches/budget.rs";
/// The benchmarks of `BENCH_FILE`, in report order, with what each times.
const IN_MEMORY: &str = "reserve_settle_in_memory";
const REFUSED: &str = "reserve_refused_in_memory";
const REDB: &str = "reserve_settle_redb_no_wait";
const BENCHMARKS: [(&str, &str); 3] = [
    (IN_MEMORY, "reserve + settle, in memory"),
    (REDB, "reserve + settle, redb (commit not awaited)"),
    (REFUSED, "refused reservation, in memory"),
];
/// The issue's target for the in-memory reserve + settle median, in ns.
const RESERVE_SETTLE_P50_TARGET_NS: f64 = 2000.0;
/// Includes compiling (the bench profile).
const BENCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of a failed command's output kept in the report.
const OUTPUT_LINES: usize = 40;

/// One row of divan's table (times per call, in ns) and, when divan's
/// `AllocProfiler` printed them, the allocations per call.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BudgetRow {
    name: String,
    fastest_ns: f64,
    slowest_ns: f64,
    median_ns: f64,
    mean_ns: f64,
    samples: u64,
    iters: u64,
    /// Allocations per call (median sample, mean); none printed = 0.
    allocs_median: f64,
    allocs_mean: f64,
    alloc_bytes_median: f64,
}

/// One line of the group-commit mode.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupRow {
    settlers: u64,
    settlements: u64,
    transactions: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

impl GroupRow {
    fn settlements_per_s(&self) -> f64 {
        self.settlements as f64 / self.seconds
    }
    fn commits_per_s(&self) -> f64 {
        self.transactions as f64 / self.seconds
    }
    fn batch(&self) -> f64 {
        self.settlements as f64 / self.transactions.max(1) as f64
    }
}

pub(super) struct BudgetPart {
    rows: Vec<BudgetRow>,
    timer_precision_ns: Option<f64>,
    group: Vec<GroupRow>,
    /// Why a mode gave no (or incomplete) numbers.
    bench_errors: Vec<String>,
    /// `stat -f` of the directory the redb files were in.
    filesystem: String,
    rustc_version: String,
    pub(super) elapsed: Duration,
    /// CPU other work used meanwhile, % of the machine.
    pub(super) other_cpu: Option<OtherCpu>,
}

impl BudgetPart {
    /// A measurement could not be made (not: a target was missed).
    pub(super) fn failed(&self) -> bool {
        !self.bench_errors.is_empty()
    }

    pub(super) fn problems(&self) -> Vec<String> {
        self.bench_errors
            .iter()
            .map(|e| format!("budget benchmark: {e}"))
            .collect()
    }

    fn row(&self, name: &str) -> Option<&BudgetRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

pub(super) fn run(env: &Env) -> BudgetPart {
    let started = Instant::now();
    let part_cpu = CpuSample::take();
    let rustc_version = command_line("rustc", &["--version"]);
    let dir = env.dir.to_string_lossy().into_owned();
    let filesystem = command_line("stat", &["-f", "-c", "%T", &dir]);

    println!("bench: budget ledger ({BENCH_FILE})");
    let mut bench_errors = Vec::new();
    let (rows, timer_precision_ns) = match run_divan(env) {
        Ok(out) => out,
        Err(e) => {
            bench_errors.push(format!("{e:#}"));
            (Vec::new(), None)
        }
    };
    if bench_errors.is_empty() {
        for (name, _) in BENCHMARKS {
            match rows.iter().find(|r| r.name == name) {
                Some(r) => println!(
                    "bench:   {name}: median {}, {} allocations per call",
                    fmt_duration(r.median_ns),
                    r.allocs_median
                ),
                None => bench_errors.push(format!(
                    "no `{name}` row in divan's output (see budget-bench.log)"
                )),
            }
        }
    }

    println!("bench: budget group commit ({BENCH_FILE}, MESH_BUDGET_GROUP_COMMIT=1)");
    let group = match run_group_commit(env) {
        Ok(group) => {
            for g in &group {
                println!(
                    "bench:   {} settlers: p50 {:.0} µs, {:.0} commits/s, batch {:.1}",
                    g.settlers,
                    g.p50_us,
                    g.commits_per_s(),
                    g.batch()
                );
            }
            group
        }
        Err(e) => {
            bench_errors.push(format!("group commit: {e:#}"));
            Vec::new()
        }
    };

    BudgetPart {
        rows,
        timer_precision_ns,
        group,
        bench_errors,
        filesystem,
        rustc_version,
        elapsed: started.elapsed(),
        other_cpu: part_cpu.other_pct(),
    }
}

/// Builds, then runs the divan benchmark and reads its table. Built first
/// so that compiling does not run alongside the timed part.
fn run_divan(env: &Env) -> Result<(Vec<BudgetRow>, Option<f64>)> {
    let mut build = cargo();
    build
        .args(["bench", "-p", "mesh-agent", "--bench", "budget", "--no-run"])
        .env("CARGO_TERM_COLOR", "never");
    let log = env.dir.join("budget-build.log");
    let (status, _, stderr) = run_captured(build, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "building the benchmark failed ({status}):\n{}",
        tail(&stderr, OUTPUT_LINES)
    );

    let mut bench = bench_command(env);
    bench.args(["--", "--color", "never"]);
    let log = env.dir.join("budget-bench.log");
    let (status, stdout, stderr) = run_captured(bench, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "the benchmark failed ({status}):\n{}",
        tail(&format!("{stdout}\n{stderr}"), OUTPUT_LINES)
    );
    let rows = parse_divan(&stdout)?;
    ensure!(
        !rows.is_empty(),
        "no benchmark rows in divan's output:\n{}",
        tail(&stdout, OUTPUT_LINES)
    );
    let precision = match timer_precision(&stdout)? {
        Some(p) => Some(p),
        None => timer_precision(&stderr)?,
    };
    Ok((rows, precision))
}

fn bench_command(env: &Env) -> Command {
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "mesh-agent", "--bench", "budget"])
        .env("CARGO_TERM_COLOR", "never")
        .env("NO_COLOR", "1")
        .env("MESH_BUDGET_BENCH_DIR", &env.dir);
    bench
}

fn run_group_commit(env: &Env) -> Result<Vec<GroupRow>> {
    let mut bench = bench_command(env);
    bench.env("MESH_BUDGET_GROUP_COMMIT", "1");
    let log = env.dir.join("budget-group-commit.log");
    let (status, stdout, stderr) = run_captured(bench, BENCH_TIMEOUT, &log)?;
    ensure!(
        status.success(),
        "the group-commit measurement failed ({status}):\n{}",
        tail(&format!("{stdout}\n{stderr}"), OUTPUT_LINES)
    );
    let rows = parse_group_commit(&stdout)?;
    ensure!(
        !rows.is_empty(),
        "no group-commit lines in its output:\n{}",
        tail(&stdout, OUTPUT_LINES)
    );
    Ok(rows)
}

/// `group-commit settlers=8 settlements=97418 transactions=18995
/// seconds=3.002 p50_us=210.2 p99_us=733.7`, one line per thread count.
fn parse_group_commit(stdout: &str) -> Result<Vec<GroupRow>> {
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let Some(fields) = line.trim().strip_prefix("group-commit ") else {
            continue;
        };
        let mut values = BTreeMap::new();
        for field in fields.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("group-commit field {field:?} in {line:?}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("group-commit value {field:?} in {line:?}"))?;
            values.insert(key, value);
        }
        let get = |key: &str| -> Result<f64> {
            values
                .get(key)
                .copied()
                .with_context(|| format!("no {key} in {line:?}"))
        };
        rows.push(GroupRow {
            settlers: get("settlers")? as u64,
            settlements: get("settlements")? as u64,
            transactions: get("transactions")? as u64,
            seconds: get("seconds")?,
            p50_us: get("p50_us")?,
            p99_us: get("p99_us")?,
        });
    }
    Ok(rows)
}

/// Reads divan's table with `AllocProfiler`'s lines:
///
/// ```text
/// budget                          fastest       │ slowest       │ median        │ mean          │ samples │ iters
/// ├─ reserve_refused_in_memory    145.3 ns      │ 521.4 ns      │ 152.3 ns      │ 155.5 ns      │ 1000    │ 100000
/// │                               alloc:        │               │               │               │         │
/// │                                 1           │ 1.07          │ 1             │ 1             │         │
/// │                                 7 B         │ 14.4 B        │ 7 B           │ 7.007 B       │         │
/// ╰─ reserve_settle_in_memory     243.2 ns      │ 563.8 ns      │ 252.8 ns      │ 260.3 ns      │ 1000    │ 100000
/// ```
///
/// A row is a tree branch with six columns; the lines under it until the
/// next row belong to it: a label (`alloc:`, `max alloc:`, `dealloc:` …),
/// then its count and its bytes. Only `alloc:` is kept; a row without one
/// made no allocation.
fn parse_divan(stdout: &str) -> Result<Vec<BudgetRow>> {
    let mut rows: Vec<BudgetRow> = Vec::new();
    // The label the next value lines belong to, and how many followed it.
    let mut label = String::new();
    let mut values_seen = 0;
    for line in stdout.lines() {
        if let Some(at) = line.find("├─ ").or_else(|| line.find("╰─ ")) {
            let branch = &line[at + "├─ ".len()..];
            let columns: Vec<&str> = branch.split('│').map(str::trim).collect();
            let [first, slowest, median, mean, samples, iters] = columns[..] else {
                bail!("divan row without six columns: {line:?}");
            };
            let (name, fastest) = first
                .split_once(char::is_whitespace)
                .with_context(|| format!("divan row without times: {line:?}"))?;
            rows.push(BudgetRow {
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
                allocs_median: 0.0,
                allocs_mean: 0.0,
                alloc_bytes_median: 0.0,
            });
            label.clear();
            continue;
        }
        let Some(row) = rows.last_mut() else {
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
                row.allocs_median = parse_count(median)?;
                row.allocs_mean = parse_count(mean)?;
            }
            2 => row.alloc_bytes_median = parse_bytes(median)?,
            _ => {}
        }
    }
    Ok(rows)
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

/// "1000 samples x 100 calls" from a row.
fn sampling(row: &BudgetRow) -> String {
    let per_sample = row.iters.checked_div(row.samples).unwrap_or(0);
    format!(
        "{} sample{} x {per_sample} call{}",
        row.samples,
        if row.samples == 1 { "" } else { "s" },
        if per_sample == 1 { "" } else { "s" },
    )
}

fn fmt_count(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

pub(super) fn render(d: &mut String, part: &BudgetPart) {
    let _ = writeln!(d, "## Budgets\n");
    let _ = writeln!(d, "### Method\n");
    let sampled = |name: &str| part.row(name).map_or_else(|| "n/a".into(), sampling);
    let _ = writeln!(
        d,
        "In-process, no network: the benchmark `{BENCH_FILE}`, run with \
         `cargo bench -p mesh-agent --bench budget -- --color never` (the bench profile: the workspace's \
         release settings; {}), after building it. The ledger holds 1,000 agents, each charged once \
         beforehand against three budgets: tokens (24h), usd (24h) and calls (1m, so 1 s slots), with \
         limits no call reaches. One call reserves 5,000 tokens, $0.003 and 1 call and settles 1,800 \
         tokens, $0.0011 and 1 call, for `agent-500`, with the system clock. Timed (one thread):\n\n\
         - **`{IN_MEMORY}`**: `Ledger::reserve` then `Reservation::settle` on an in-memory ledger; {};\n\
         - **`{REDB}`**: the same on a ledger backed by a redb file (`Ledger::open`), the Commit \
         dropped unawaited: the settle queues the rows for the writer thread, which commits in the \
         background while the loop goes on; {};\n\
         - **`{REFUSED}`**: a reservation refused by the calls budget (limit 0), which builds the \
         `Exhausted` error; {}.\n",
        if part.rustc_version.is_empty() {
            "rustc version unknown"
        } else {
            &part.rustc_version
        },
        sampled(IN_MEMORY),
        sampled(REDB),
        sampled(REFUSED),
    );
    let _ = writeln!(
        d,
        "divan times each sample of consecutive calls and divides by its calls; the median is the \
         median sample's time per call. Timer precision, as divan measured it: {}. The benchmark's \
         global allocator is divan's `AllocProfiler`, which counts the allocations of the benchmark's \
         thread (not those of the redb writer thread) per call.\n",
        part.timer_precision_ns
            .map_or_else(|| "not reported".into(), fmt_duration),
    );
    let _ = writeln!(
        d,
        "Then the group commit (`MESH_BUDGET_GROUP_COMMIT=1`, same binary): for N = 1, 8 and 64 \
         threads, each thread loops for 3 s over reserve, settle and waiting for its Commit (durable: \
         the redb transaction that carries it committed with fsync), on its own agent, against one \
         redb file in `target/bench` (filesystem: {}). Latency is from the settle to the Commit \
         resolving; commits/s counts write transactions, and the batch is settlements per \
         transaction.\n",
        if part.filesystem.is_empty() {
            "unknown"
        } else {
            &part.filesystem
        },
    );

    let _ = writeln!(d, "### Results\n");
    let _ = writeln!(
        d,
        "| benchmark | median | mean | fastest | slowest | allocations per call (median, mean) | samples x calls |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|");
    for (name, what) in BENCHMARKS {
        match part.row(name) {
            Some(r) => {
                let _ = writeln!(
                    d,
                    "| {what} (`{name}`) | {} | {} | {} | {} | {}, {} ({} B median) | {} |",
                    fmt_duration(r.median_ns),
                    fmt_duration(r.mean_ns),
                    fmt_duration(r.fastest_ns),
                    fmt_duration(r.slowest_ns),
                    fmt_count(r.allocs_median),
                    fmt_count(r.allocs_mean),
                    fmt_count(r.alloc_bytes_median),
                    sampling(r),
                );
            }
            None => {
                let _ = writeln!(
                    d,
                    "| {what} (`{name}`) | n/a | n/a | n/a | n/a | n/a | not measured |"
                );
            }
        }
    }
    let _ = writeln!(d);
    let _ = writeln!(
        d,
        "| settlers | settle to durable p50 | p99 | settlements/s | commits/s | settlements per commit |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|");
    if part.group.is_empty() {
        let _ = writeln!(d, "| n/a | n/a | n/a | n/a | n/a | not measured |");
    }
    for g in &part.group {
        let _ = writeln!(
            d,
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} |",
            g.settlers,
            fmt_duration(g.p50_us * 1e3),
            fmt_duration(g.p99_us * 1e3),
            g.settlements_per_s(),
            g.commits_per_s(),
            g.batch(),
        );
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
    let in_memory = part.row(IN_MEMORY);
    let _ = writeln!(
        d,
        "| reserve + settle p50 under {} µs: one agent, 3 budgets, in memory | {} | {} |",
        RESERVE_SETTLE_P50_TARGET_NS / 1e3,
        in_memory.map_or_else(
            || "n/a".into(),
            |r| format!("{} (median sample)", fmt_duration(r.median_ns))
        ),
        verdict(in_memory.map(|r| r.median_ns < RESERVE_SETTLE_P50_TARGET_NS)),
    );
    let _ = writeln!(
        d,
        "| no allocation on the in-memory allow path (agent and budgets exist) | {} | {} |",
        in_memory.map_or_else(
            || "n/a".into(),
            |r| format!("{} per call (mean)", fmt_count(r.allocs_mean))
        ),
        verdict(in_memory.map(|r| r.allocs_mean == 0.0)),
    );
    let batched = part.group.iter().find(|g| g.settlers > 1);
    let _ = writeln!(
        d,
        "| concurrent settlements share commits | {} | {} |",
        batched.map_or_else(
            || "n/a".into(),
            |g| format!(
                "{:.1} settlements per commit at {} settlers",
                g.batch(),
                g.settlers
            )
        ),
        verdict(batched.map(|g| g.batch() > 1.0)),
    );
    let _ = writeln!(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIVAN: &str = "budget                          fastest       │ slowest       │ median        │ mean          │ samples │ iters
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
    fn reads_divan_table_with_allocations() {
        let rows = parse_divan(DIVAN).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, [REFUSED, IN_MEMORY, REDB]);
        assert_eq!(rows[0].allocs_median, 1.0);
        assert_eq!(rows[0].alloc_bytes_median, 7.0);
        assert!((rows[0].median_ns - 152.3).abs() < 1e-9);
        // No allocation lines: none made.
        assert_eq!((rows[1].allocs_median, rows[1].allocs_mean), (0.0, 0.0));
        assert_eq!(rows[1].samples, 1000);
        // The last row's lines have no tree bar; `dealloc:` is not `alloc:`.
        assert!((rows[2].allocs_mean - 2.032).abs() < 1e-9);
        assert!((rows[2].alloc_bytes_median - 320.9).abs() < 1e-9);
        assert!((rows[2].slowest_ns - 2080.0).abs() < 1e-6);
        assert_eq!(sampling(&rows[2]), "1000 samples x 100 calls");
    }

    #[test]
    fn rejects_broken_rows() {
        assert!(parse_divan("├─ bad  1 yr │ 1 ns │ 1 ns │ 1 ns │ 1 │ 1").is_err());
        assert!(parse_divan("├─ short  1 ns │ 1 ns").is_err());
        assert!(parse_count("3 X").is_err());
        assert_eq!(parse_count("1.5 K").unwrap(), 1500.0);
        assert!(parse_bytes("12").is_err());
        assert_eq!(parse_bytes("2 KiB").unwrap(), 2048.0);
    }

    #[test]
    fn reads_group_commit_lines() {
        let out = "noise\ngroup-commit settlers=8 settlements=97418 transactions=18995 seconds=3.002 p50_us=210.2 p99_us=733.7\n";
        let rows = parse_group_commit(out).unwrap();
        assert_eq!(rows.len(), 1);
        let g = &rows[0];
        assert_eq!(
            (g.settlers, g.settlements, g.transactions),
            (8, 97418, 18995)
        );
        assert!((g.batch() - 97418.0 / 18995.0).abs() < 1e-9);
        assert!((g.commits_per_s() - 18995.0 / 3.002).abs() < 1e-6);
        assert!(parse_group_commit("group-commit settlers=x").is_err());
        assert!(parse_group_commit("group-commit settlers=1 seconds=1").is_err());
    }
}
