//! `cargo xtask fuzz [--seconds N] [TARGET...]`: run the L7 parsers' fuzz
//! targets (fuzz/, cargo-fuzz + libFuzzer, nightly) one after the other, each
//! for N seconds, and say which found a crash and where its input is.
//!
//! Not part of `cargo xtask test` or CI: fuzzing is open-ended and wants the
//! machine's time. Each target runs as one libFuzzer process (no `-jobs`).
//!
//! Corpora: the committed seeds are in fuzz/corpus/<target>/; what libFuzzer
//! learns goes to fuzz/target/corpus/<target>/ (ignored by git, kept between
//! runs), so a run never adds files to the repository. Crash inputs go to
//! fuzz/artifacts/<target>/ (ignored by git too).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::setup::{ensure_setup, Want};
use crate::util::{cargo, display_cmd, repo_root, run, succeeds};

/// The fuzz targets (fuzz/fuzz_targets/<name>.rs).
pub const TARGETS: &[&str] = &["sse", "llm_usage", "http_jsonrpc"];

/// cargo-fuzz, pinned: 0.13.2 builds with the stable toolchain and drives the
/// nightly one (`cargo +nightly fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The default time per target.
pub const DEFAULT_SECONDS: u64 = 60;

/// Whether `cargo fuzz` is installed.
fn cargo_fuzz_present() -> bool {
    succeeds("cargo-fuzz", &["--version"])
}

/// Installs cargo-fuzz unless present; one line either way (as `setup` does).
/// Called by `cargo xtask setup --fuzz` and `cargo xtask fuzz`.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_present() {
        println!("ok: cargo-fuzz already present");
        return Ok(());
    }
    println!("installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))?;
    if !cargo_fuzz_present() {
        bail!("cargo-fuzz was installed but `cargo-fuzz --version` still fails; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// How one target's run ended.
struct Report {
    target: String,
    ok: bool,
    status: String,
    /// Time spent fuzzing (libFuzzer's count), else the whole command's
    /// (which includes a rebuild when mesh-agent changed).
    seconds: f64,
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    artifacts: Vec<PathBuf>,
}

pub fn fuzz(seconds: u64, targets: &[String]) -> Result<ExitCode> {
    let targets: Vec<String> = if targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown fuzz target {t:?}; the targets are: {}",
                    TARGETS.join(", ")
                );
            }
        }
        targets.to_vec()
    };
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }

    // The targets link mesh-agent, whose build.rs builds the eBPF programs:
    // the same toolchain as `cargo xtask build`, plus cargo-fuzz.
    ensure_setup(Want { bench: false })?;
    ensure_cargo_fuzz()?;

    let fuzz_dir = repo_root().join("fuzz");
    // Build every target once first, so that a build error is told apart
    // from a crash.
    run(cargo_fuzz(&fuzz_dir).arg("build"))?;

    let mut reports = Vec::new();
    for target in &targets {
        reports.push(run_target(&fuzz_dir, target, seconds)?);
    }

    println!();
    println!("fuzz summary ({seconds} s per target):");
    for r in &reports {
        let stats = match (r.runs, r.execs_per_sec) {
            (Some(runs), Some(eps)) => format!("{runs} runs, {eps} exec/s"),
            _ => "no statistics".to_string(),
        };
        println!(
            "  {:<14} {:<6} {:>5.0} s  {stats}  ({})",
            r.target,
            if r.ok { "ok" } else { "FAILED" },
            r.seconds,
            r.status
        );
        for a in &r.artifacts {
            println!("      artifact: {}", a.display());
            println!(
                "      reproduce: (cd fuzz && cargo +nightly fuzz run {} {})",
                r.target,
                a.strip_prefix(&fuzz_dir).unwrap_or(a).display()
            );
        }
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    println!("{} passed, {failed} failed", reports.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo +nightly fuzz` in fuzz/, through rustup so that the toolchain is
/// nightly whatever runs us, and without the variables `cargo run` set for
/// xtask (a `CARGO` or `RUSTC` pointing at the stable toolchain, a shared
/// target directory): cargo-fuzz keeps its own in fuzz/target.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(fuzz_dir)
        .stdin(Stdio::null());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Report> {
    let seeds = fuzz_dir.join("corpus").join(target);
    let work = fuzz_dir.join("target").join("corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let artifacts_dir = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts_dir)
        .with_context(|| format!("create {}", artifacts_dir.display()))?;

    let mut cmd = cargo_fuzz(fuzz_dir);
    cmd.args(["run", target]).arg(&work);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        // An input that takes this long is a hang: reported as a failure.
        .arg("-timeout=10")
        .arg("-print_final_stats=1");
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }

    println!();
    println!("fuzzing {target} for {seconds} s");
    eprintln!("+ (cd fuzz && {})", display_cmd(&cmd));
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display_cmd(&cmd)))?;

    // libFuzzer writes to stderr: pass it through and keep the final stats.
    let mut runs = None;
    let mut execs_per_sec = None;
    let mut fuzz_seconds = None;
    let mut reader = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let stderr = std::io::stderr();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        {
            let mut out = stderr.lock();
            out.write_all(&line)?;
            out.flush()?;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if let Some(v) = stat(text, "stat::number_of_executed_units:") {
            runs = Some(v);
        } else if let Some(v) = stat(text, "stat::average_exec_per_sec:") {
            execs_per_sec = Some(v);
        } else if let Some(v) = done_seconds(text) {
            fuzz_seconds = Some(v);
        }
    }
    let status = child.wait().context("wait for cargo fuzz")?;
    let elapsed = started.elapsed().as_secs_f64();

    let artifacts = new_files(&artifacts_dir, started_wall);
    let ok = status.success() && artifacts.is_empty();
    Ok(Report {
        target: target.to_string(),
        ok,
        status: if status.success() {
            "no crash".to_string()
        } else {
            format!("libFuzzer {status}")
        },
        seconds: fuzz_seconds.map_or(elapsed, |s| s as f64),
        runs,
        execs_per_sec,
        artifacts,
    })
}

fn stat(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.trim().parse().ok()
}

/// libFuzzer's closing "Done 946531 runs in 121 second(s)".
fn done_seconds(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Done ")?;
    let (_, after) = rest.split_once(" runs in ")?;
    after.strip_suffix(" second(s)")?.trim().parse().ok()
}

/// Files in `dir` modified at or after `since` (the crash, leak, timeout and
/// OOM inputs this run wrote), sorted.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}
