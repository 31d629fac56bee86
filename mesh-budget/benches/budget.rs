//! Budget ledger cost, run by
//! `cargo bench -p mesh-budget --bench budget` and by `cargo xtask bench`.
//!
//! Two modes:
//! - divan (the default): reserve + settle of one call against an agent's
//!   three budgets (tokens, usd, calls), with 1,000 agents in the ledger;
//!   in memory, and against a redb-backed ledger without awaiting the
//!   commit; plus a refused reservation. Allocations per call are counted
//!   by divan's `AllocProfiler` (on the benchmark's thread: the redb
//!   writer's own allocations are not in them).
//! - `MESH_BUDGET_GROUP_COMMIT=1`: the group commit. For N = 1, 8 and 64
//!   threads, each reserving, settling and waiting for its Commit in a
//!   loop for a fixed time, against one redb file (in
//!   `MESH_BUDGET_BENCH_DIR`, else the temp directory): the latency from
//!   settle to durable (p50, p99), settlements and commits per second and
//!   the mean batch. One line per N:
//!   `group-commit settlers=8 settlements=… transactions=… seconds=… p50_us=… p99_us=…`.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use divan::AllocProfiler;
use mesh_budget::{Ledger, Spend, SystemClock};
use mesh_policy::{Budget, BudgetLimit, OnExhaust};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const AGENTS: usize = 1000;
const AGENT: &str = "agent-500";
const GROUP_COMMIT_SETTLERS: [usize; 3] = [1, 8, 64];
const GROUP_COMMIT_SECONDS: f64 = 3.0;

fn main() {
    if std::env::var_os("MESH_BUDGET_GROUP_COMMIT").is_some_and(|v| v == "1") {
        group_commit();
    } else {
        divan::main();
    }
}

fn budget(name: &str, limit: BudgetLimit, window_secs: u64) -> Budget {
    Budget {
        name: name.into(),
        limit,
        window: Duration::from_secs(window_secs),
        on_exhaust: OnExhaust::Halt,
        server: None,
        tool: None,
    }
}

/// An agent's three budgets, with limits no benchmark reaches.
fn three_budgets() -> [Budget; 3] {
    [
        budget("daily-tokens", BudgetLimit::Tokens(u64::MAX), 86_400),
        budget("spend", BudgetLimit::Usd(1e9), 86_400),
        budget("runaway", BudgetLimit::Calls(u64::MAX), 60),
    ]
}

/// One LLM call's reservation and (smaller) actual spend.
const RESERVE: Spend = Spend {
    tokens: 5_000,
    nano_usd: 3_000_000,
    calls: 1,
};
const ACTUAL: Spend = Spend {
    tokens: 1_800,
    nano_usd: 1_100_000,
    calls: 1,
};

/// Charges every agent once, so that the agents and their budgets exist.
fn populate(ledger: &Ledger, budgets: &[&Budget]) {
    for i in 0..AGENTS {
        let agent = format!("agent-{i}");
        let commit = ledger
            .reserve(&agent, budgets, RESERVE)
            .expect("limits no call reaches")
            .settle(ACTUAL);
        drop(commit);
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("MESH_BUDGET_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A redb file for one measurement, removed when dropped.
struct BenchFile(PathBuf);

impl BenchFile {
    fn new(name: &str) -> BenchFile {
        let path = bench_dir().join(format!("budget-bench-{}-{name}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        BenchFile(path)
    }
}

impl Drop for BenchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[divan::bench(sample_count = 1000, sample_size = 100)]
fn reserve_settle_in_memory(bencher: divan::Bencher) {
    let ledger = Ledger::in_memory(Arc::new(SystemClock));
    let budgets = three_budgets();
    let budgets: Vec<&Budget> = budgets.iter().collect();
    populate(&ledger, &budgets);
    bencher.bench_local(|| {
        let reservation = ledger
            .reserve(divan::black_box(AGENT), &budgets, RESERVE)
            .expect("limits no call reaches");
        reservation.settle(divan::black_box(ACTUAL))
    });
}

#[divan::bench(sample_count = 1000, sample_size = 100)]
fn reserve_refused_in_memory(bencher: divan::Bencher) {
    let ledger = Ledger::in_memory(Arc::new(SystemClock));
    let mut budgets = three_budgets();
    budgets[2] = budget("runaway", BudgetLimit::Calls(0), 60);
    let budgets: Vec<&Budget> = budgets.iter().collect();
    bencher.bench_local(|| {
        ledger
            .reserve(divan::black_box(AGENT), &budgets, RESERVE)
            .expect_err("no calls allowed")
    });
}

/// The settle queues the row for the writer thread and returns; the Commit
/// is dropped unawaited (the writer still makes it durable).
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn reserve_settle_redb_no_wait(bencher: divan::Bencher) {
    let file = BenchFile::new("no-wait");
    let ledger = Ledger::open(&file.0, Arc::new(SystemClock)).expect("open the bench ledger");
    let budgets = three_budgets();
    let budgets: Vec<&Budget> = budgets.iter().collect();
    populate(&ledger, &budgets);
    bencher.bench_local(|| {
        let reservation = ledger
            .reserve(divan::black_box(AGENT), &budgets, RESERVE)
            .expect("limits no call reaches");
        reservation.settle(divan::black_box(ACTUAL))
    });
    ledger.close();
}

/// The group-commit measurement (see the module documentation).
fn group_commit() {
    let budgets = three_budgets();
    for settlers in GROUP_COMMIT_SETTLERS {
        let file = BenchFile::new(&format!("group-{settlers}"));
        let ledger =
            Arc::new(Ledger::open(&file.0, Arc::new(SystemClock)).expect("open the bench ledger"));
        let stop = Arc::new(AtomicBool::new(false));
        let start_stats = ledger.commit_stats();
        let started = Instant::now();
        let workers: Vec<_> = (0..settlers)
            .map(|i| {
                let ledger = Arc::clone(&ledger);
                let stop = Arc::clone(&stop);
                let budgets = budgets.clone();
                std::thread::spawn(move || {
                    let budgets: Vec<&Budget> = budgets.iter().collect();
                    let agent = format!("agent-{i}");
                    let mut latencies_ns: Vec<u64> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let reservation = ledger
                            .reserve(&agent, &budgets, RESERVE)
                            .expect("limits no call reaches");
                        let settled_at = Instant::now();
                        reservation
                            .settle(ACTUAL)
                            .wait()
                            .expect("the commit succeeds");
                        latencies_ns.push(
                            u64::try_from(settled_at.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        );
                    }
                    latencies_ns
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(GROUP_COMMIT_SECONDS));
        stop.store(true, Ordering::Relaxed);
        let mut latencies_ns: Vec<u64> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("a settler thread panicked"))
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        let stats = ledger.commit_stats();
        ledger.close();
        latencies_ns.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if latencies_ns.is_empty() {
                return f64::NAN;
            }
            let at = ((latencies_ns.len() - 1) as f64 * p).round() as usize;
            latencies_ns[at] as f64 / 1e3
        };
        println!(
            "group-commit settlers={settlers} settlements={} transactions={} seconds={seconds:.3} p50_us={:.1} p99_us={:.1}",
            stats.settlements - start_stats.settlements,
            stats.transactions - start_stats.transactions,
            percentile(0.5),
            percentile(0.99),
        );
    }
}
