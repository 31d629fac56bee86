//! The budget-ledger part of `cargo xtask bench` (docs/benchmarks.md).
//!
//! In-process numbers, no daemon and no network, from the benchmark
//! `mesh-budget/benches/budget.rs` run twice: as a divan benchmark
//! (`cargo bench -p mesh-budget --bench budget`: reserve + settle against
//! three budgets in memory and with redb, a refused reservation, and the
//! allocations per call from divan's `AllocProfiler`), then with
//! `MESH_BUDGET_GROUP_COMMIT=1` (the group commit: 1, 8 and 64 threads
//! settling and waiting for durability against one redb file). divan prints
//! a table only, so this part reads that table, allocation lines included
//! (`divan.rs`, shared with the policy part).
use super::divan::{
    self, fmt_duration, run_captured, DivanOutput, DivanRow, BENCH_TIMEOUT, OUTPUT_LINES,
};
use super::targets::{self, verdict};
use super::*;

const BENCH_FILE: &str = "mesh-budget/benches/budget.rs";
/// The benchmarks of `BENCH_FILE`, in report order, with what each times.
const IN_MEMORY: &str = "reserve_settle_in_memory";
const REFUSED: &str = "reserve_refused_in_memory";
const REDB: &str = "reserve_settle_redb_no_wait";
const BENCHMARKS: [(&str, &str); 3] = [
    (IN_MEMORY, "reserve + settle, in memory"),
    (REDB, "reserve + settle, redb (commit not awaited)"),
    (REFUSED, "refused reservation, in memory"),
];
/// The target for the in-memory reserve + settle median, in ns.
const RESERVE_SETTLE_P50_TARGET_NS: f64 = 2000.0;
/// The crate and divan benchmark of `BENCH_FILE`.
const PACKAGE: &str = "mesh-budget";
const BENCH: &str = "budget";
/// Where the benchmark puts its redb files.
const BENCH_DIR_ENV: &str = "MESH_BUDGET_BENCH_DIR";

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
    /// The divan table; its allocations are those of `AllocProfiler`.
    divan: DivanOutput,
    group: Vec<GroupRow>,
    /// Why a mode gave no (or incomplete) numbers.
    bench_errors: Vec<String>,
    /// `stat -f` of the directory the redb files were in.
    filesystem: String,
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
}

pub(super) fn run(env: &Env) -> BudgetPart {
    let started = Instant::now();
    let part_cpu = CpuSample::take();
    let dir = env.dir.to_string_lossy().into_owned();
    let filesystem = command_line("stat", &["-f", "-c", "%T", &dir]);

    println!("bench: budget ledger ({BENCH_FILE})");
    let mut bench_errors = Vec::new();
    let divan = divan::run_benchmarks(
        env,
        PACKAGE,
        BENCH,
        &[(BENCH_DIR_ENV, env.dir.as_os_str())],
        &BENCHMARKS,
        |r| {
            format!(
                "median {}, {} allocations per call",
                fmt_duration(r.median_ns),
                r.alloc.count_median
            )
        },
        &mut bench_errors,
    );

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
        divan,
        group,
        bench_errors,
        filesystem,
        elapsed: started.elapsed(),
        other_cpu: part_cpu.other_pct(),
    }
}

fn run_group_commit(env: &Env) -> Result<Vec<GroupRow>> {
    let mut bench = divan::bench_command(PACKAGE, BENCH);
    bench
        .env(BENCH_DIR_ENV, &env.dir)
        .env("MESH_BUDGET_GROUP_COMMIT", "1");
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
    let _ = writeln!(
        d,
        "In-process, no network: the benchmark `{BENCH_FILE}`, run with \
         `cargo bench -p mesh-budget --bench budget -- --color never` (the bench profile: the workspace's \
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
        part.divan.rustc_version_text(),
        part.divan.sampling(IN_MEMORY),
        part.divan.sampling(REDB),
        part.divan.sampling(REFUSED),
    );
    let _ = writeln!(
        d,
        "divan times each sample of consecutive calls and divides by its calls; the median is the \
         median sample's time per call. Timer precision, as divan measured it: {}. The benchmark's \
         global allocator is divan's `AllocProfiler`, which counts the allocations of the benchmark's \
         thread (not those of the redb writer thread) per call.\n",
        part.divan.timer_precision_text(),
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

    let allocations = |r: &DivanRow| {
        format!(
            "{}, {} ({} B median)",
            fmt_count(r.alloc.count_median),
            fmt_count(r.alloc.count_mean),
            fmt_count(r.alloc.bytes_median),
        )
    };
    divan::write_results(
        d,
        &part.divan,
        &BENCHMARKS,
        &[("allocations per call (median, mean)", &allocations)],
    );
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

    targets::write_header(d);
    let in_memory = part.divan.row(IN_MEMORY);
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
            |r| format!("{} per call (mean)", fmt_count(r.alloc.count_mean))
        ),
        verdict(in_memory.map(|r| r.alloc.count_mean == 0.0)),
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
