//! `cargo xtask test`: every test tier, as root, on a real kernel.

use std::io::{BufRead, BufReader, Write};
use std::process::{ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::setup::{ensure_setup, Want};
use crate::util::{cargo, cgroup2_mount, display_cmd, ensure_bpffs, is_root, run};

pub fn test(extra: &[String]) -> Result<ExitCode> {
    // Root first: under CI a non-root run must fail here, before anything else.
    if !is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        if ci {
            bail!(
                "cargo xtask test must run as root under CI: the kernel tier loads eBPF \
                 programs and creates cgroups. Not running as root is a failure, not a skip."
            );
        }
        bail!(
            "cargo xtask test must run as root: the kernel tier loads eBPF programs, \
             creates its own cgroups and mounts bpffs. Re-run it as root \
             (e.g. `sudo -E env PATH=\"$PATH\" cargo xtask test`)."
        );
    }

    ensure_setup(Want { bench: false })?;

    let cgroup2 = cgroup2_mount()?;
    println!("ok: cgroup2 mounted at {}", cgroup2.display());
    ensure_bpffs()?;

    // The integration tests run target/debug/mesh-agent and target/debug/meshctl.
    run(cargo().args(["build", "-p", "mesh-agent"]))?;

    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(extra);
    eprintln!("+ {}", display_cmd(&cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display_cmd(&cmd)))?;

    // Pass the test output through unchanged and add up the per-binary
    // "test result:" lines for one closing line.
    let mut totals = Totals::default();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let stdout = std::io::stdout();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        {
            let mut out = stdout.lock();
            out.write_all(&line)?;
            out.flush()?;
        }
        totals.add_line(&String::from_utf8_lossy(&line));
    }
    let status = child.wait()?;

    println!(
        "xtask test: {} passed, {} failed, {} ignored in {} test binaries; cargo test {}",
        totals.passed,
        totals.failed,
        totals.ignored,
        totals.binaries,
        if status.success() {
            "succeeded"
        } else {
            "FAILED"
        },
    );
    if totals.ignored > 0 {
        println!(
            "xtask test: note: {} tests were ignored (#[ignore]); run them with `cargo xtask test -- -- --ignored`",
            totals.ignored
        );
    }
    // Last, alone on its line, in the plain form CI reads: the totals of every
    // test binary (cargo's own last summary is the doc-tests', often empty).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if status.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(
            status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(1),
        ))
    }
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    binaries: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Parse `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; …`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n_kind = match words.as_slice() {
                [.., n, kind] => n.parse::<u64>().ok().map(|n| (n, *kind)),
                _ => None,
            };
            match n_kind {
                Some((n, "passed")) => self.passed += n,
                Some((n, "failed")) => self.failed += n,
                Some((n, "ignored")) => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summary() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n");
        t.add_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Totals {
                binaries: 2,
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
    }
}
