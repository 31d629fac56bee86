//! Small helpers shared by the xtask commands: paths, running commands with
//! the command line echoed, privilege and mount checks. Ports, cgroups and
//! the daemon itself are in the shared test bed (`mesh-testbed`).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};
pub use mesh_testbed::{cgroup2_mount, terminate, wait_or_kill};

/// The workspace root: the parent of xtask's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The cargo binary to use for nested invocations: the one that runs us
/// (`CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

/// Put `$CARGO_HOME/bin` on PATH for this process and its children, so that
/// tools installed by `cargo install` (bpf-linker, oha) are found even when the
/// caller's PATH lacks it (e.g. under sudo).
pub fn ensure_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .expect("PATH entries contain no separator");
    // Single-threaded at this point (called first thing in main).
    std::env::set_var("PATH", joined);
}

/// PATH with `dir` prepended.
pub fn path_with_prefix(dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
        .expect("PATH entries contain no separator")
}

/// A command line rendered for humans (shell-quoted where needed).
pub fn display_cmd(cmd: &Command) -> String {
    let mut out = String::new();
    for env in cmd.get_envs() {
        if let (key, Some(value)) = env {
            if key == "PATH" {
                // PATH is long and noisy; show only that it was changed.
                out.push_str("PATH=… ");
                continue;
            }
            let _ = write!(out, "{}={} ", key.to_string_lossy(), quote(value));
        }
    }
    out.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%^".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run `cmd`, echoing it first (`+ cmd …` on stderr); fail if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = run_status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display_cmd(cmd));
    }
    Ok(())
}

/// Run `cmd`, echoing it first, and return its exit status.
pub fn run_status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", display_cmd(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display_cmd(cmd)))
}

/// Run `cmd` silently (a probe); `None` if it cannot be started.
pub fn probe(cmd: &mut Command) -> Option<std::process::Output> {
    cmd.stdin(Stdio::null()).output().ok()
}

/// True if `program` runs and exits 0 with the given arguments (output discarded).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    probe(Command::new(program).args(args)).is_some_and(|o| o.status.success())
}

/// The effective uid, from /proc/self/status (no libc needed).
pub fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Uid: real effective saved fs
    let euid = line
        .split_whitespace()
        .nth(2)
        .context("malformed Uid: line in /proc/self/status")?;
    euid.parse()
        .context("malformed Uid: line in /proc/self/status")
}

pub fn is_root() -> bool {
    effective_uid().is_ok_and(|uid| uid == 0)
}

/// Mount bpffs at /sys/fs/bpf unless it already is.
pub fn ensure_bpffs() -> Result<()> {
    let dir = Path::new("/sys/fs/bpf");
    if mesh_testbed::bpffs_mounted_at(dir)? {
        println!("ok: bpffs already mounted at {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir))
        .context("mount bpffs at /sys/fs/bpf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_display() {
        assert_eq!(quote(OsStr::new("abc")), "abc");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }
}
