//! The policy-decision part of `cargo xtask bench` (docs/benchmarks.md).
//!
//! In-process numbers, no daemon and no network: the divan benchmark
//! `mesh-policy/benches/policy.rs` (`cargo bench -p mesh-policy --bench
//! policy`), which times the policy engine's decision for a `tools/call`
//! against 1,000 agents x 50 rules and the load of that whole set, and the
//! allocation test `mesh-policy/tests/policy_alloc.rs`, which checks that an
//! allowed decision makes no heap allocation. divan prints a table only (no
//! machine-readable output in 0.1), so this part reads that table
//! (`divan.rs`, shared with the budget part).
use super::divan::{self, fmt_duration, run_captured, DivanOutput, OUTPUT_LINES};
use super::targets::{self, verdict};
use super::*;

const BENCH_FILE: &str = "mesh-policy/benches/policy.rs";
const ALLOC_TEST_FILE: &str = "mesh-policy/tests/policy_alloc.rs";
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
/// The target for the allowed decision's median, in ns.
const DECISION_P50_TARGET_NS: f64 = 1000.0;
/// The crate and divan benchmark of `BENCH_FILE`.
const PACKAGE: &str = "mesh-policy";
const BENCH: &str = "policy";
/// Includes compiling (a debug test build).
const TEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

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
    divan: DivanOutput,
    /// Why the benchmark gave no (or incomplete) numbers.
    bench_errors: Vec<String>,
    alloc: AllocTest,
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
}

pub(super) fn run(env: &Env) -> PolicyPart {
    let started = Instant::now();
    let part_cpu = CpuSample::take();

    println!("bench: policy decisions ({BENCH_FILE})");
    let mut bench_errors = Vec::new();
    let divan = divan::run_benchmarks(
        env,
        PACKAGE,
        BENCH,
        &[],
        &BENCHMARKS,
        |r| {
            format!(
                "median {}, mean {}",
                fmt_duration(r.median_ns),
                fmt_duration(r.mean_ns)
            )
        },
        &mut bench_errors,
    );

    println!("bench: policy allocation test ({ALLOC_TEST_FILE})");
    let alloc = run_alloc_test(env);
    match &alloc {
        AllocTest::Passed { summary } => println!("bench:   passed ({summary})"),
        AllocTest::Failed { .. } => println!("bench:   FAILED (see policy-alloc.log)"),
        AllocTest::NotRun { error } => println!("bench:   did not run: {error}"),
    }

    PolicyPart {
        divan,
        bench_errors,
        alloc,
        elapsed: started.elapsed(),
        other_cpu: part_cpu.other_pct(),
    }
}

/// Runs the allocation test (`cargo test`, the debug build its command
/// states) and classifies the outcome.
fn run_alloc_test(env: &Env) -> AllocTest {
    let mut test = cargo();
    test.args([
        "test",
        "-p",
        PACKAGE,
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

pub(super) fn render(d: &mut String, part: &PolicyPart) {
    let _ = writeln!(d, "## Policy decisions\n");
    let _ = writeln!(d, "### Method\n");
    let _ = writeln!(
        d,
        "In-process, no I/O: the divan benchmark `{BENCH_FILE}`, run with \
         `cargo bench -p mesh-policy --bench policy -- --color never` (the bench profile: the workspace's \
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
        part.divan.rustc_version_text(),
        part.divan.sampling(ALLOWED),
        part.divan.sampling(REFUSED),
        part.divan.sampling(RELOAD),
    );
    let _ = writeln!(
        d,
        "divan times each sample of consecutive calls and divides by its calls; fastest, slowest, median \
         and mean are over the samples, so the median is the median sample's time per call. Timer \
         precision, as divan measured it: {}. Other work shares the machine (see Machine above). Then the \
         allocation test `{ALLOC_TEST_FILE}` (`cargo test -p mesh-policy --test policy_alloc`, debug build): a \
         counting global allocator counts the allocations made on the test's thread during one allowed \
         `tools/call` decision (deny globs, class, grant, no `when` conditions) and one `visible()` check, \
         on a two-server policy, and checks that it does count those of a refusal.\n",
        part.divan.timer_precision_text(),
    );

    divan::write_results(d, &part.divan, &BENCHMARKS, &[]);

    targets::write_header(d);
    let allowed_median = part.divan.row(ALLOWED).map(|r| r.median_ns);
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
        part.divan.row(RELOAD).map_or_else(
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
