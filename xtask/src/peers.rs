//! The real peers the end-to-end tests talk to, installed pinned into
//! `target/peers/`:
//!
//! - `target/peers/venv`: a Python venv (Debian's `/usr/bin/python3`) with
//!   the MCP, A2A, OpenAI and Anthropic SDKs, installed from
//!   `tests/peers/requirements.lock` with `--require-hashes`;
//! - `target/peers/node`: `@modelcontextprotocol/server-everything` and
//!   `@copilotkit/aimock`, installed with `npm ci` from
//!   `tests/peers/node/package{,-lock}.json`.
//!
//! Each half has a stamp file holding a hash of its lock files (and of the
//! interpreter version); an up-to-date stamp means nothing to do.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{display_cmd, is_root, probe, repo_root, run, succeeds, target_dir};

/// The interpreter the venv is made from: Debian's (packages `python3`,
/// `python3-venv`), not whatever `python3` a user's PATH finds first.
const PYTHON: &str = "/usr/bin/python3";

/// `@copilotkit/aimock` 1.43.0 declares `engines.node >= 20.15.0`.
const NODE_MIN: (u32, u32) = (20, 15);

/// Where the lock files live in the repository.
fn source_dir() -> PathBuf {
    repo_root().join("tests").join("peers")
}

/// `target/peers` (the tests crate finds it as `<target>/peers` too).
pub fn peers_dir() -> PathBuf {
    target_dir().join("peers")
}

fn venv_dir() -> PathBuf {
    peers_dir().join("venv")
}

fn node_dir() -> PathBuf {
    peers_dir().join("node")
}

fn venv_stamp() -> PathBuf {
    peers_dir().join("venv.stamp")
}

fn node_stamp() -> PathBuf {
    peers_dir().join("node.stamp")
}

/// FNV-1a 64: a stable content hash without a dependency (change detection only).
fn fnv1a(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(b"\0") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

/// The first line a `--version` probe prints (stdout or stderr), if it runs.
fn version_of(program: &str) -> Option<String> {
    let out = probe(Command::new(program).arg("--version"))?;
    if !out.status.success() {
        return None;
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

/// What the venv stamp should say now: the lock and the interpreter version.
fn venv_want() -> Result<String> {
    let lock = read(&source_dir().join("requirements.lock"))?;
    let python = version_of(PYTHON).unwrap_or_default();
    Ok(format!(
        "{} requirements.lock {python}\n",
        fnv1a(&[&lock, python.as_bytes()])
    ))
}

/// What the node stamp should say now: package.json, the lock and node's version.
fn node_want() -> Result<String> {
    let src = source_dir().join("node");
    let manifest = read(&src.join("package.json"))?;
    let lock = read(&src.join("package-lock.json"))?;
    let node = version_of("node").unwrap_or_default();
    Ok(format!(
        "{} package.json package-lock.json node {node}\n",
        fnv1a(&[&manifest, &lock, node.as_bytes()])
    ))
}

fn stamp_matches(stamp: &Path, want: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|s| s == want)
}

fn venv_ok() -> bool {
    venv_dir().join("bin/python").exists()
        && venv_want().is_ok_and(|want| stamp_matches(&venv_stamp(), &want))
}

fn node_ok() -> bool {
    node_tools_present()
        && node_dir().join("node_modules").is_dir()
        && node_want().is_ok_and(|want| stamp_matches(&node_stamp(), &want))
}

fn node_tools_present() -> bool {
    succeeds("node", &["--version"]) && succeeds("npm", &["--version"])
}

/// What is missing or out of date, for `setup::ensure_setup` (no installs).
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !venv_ok() {
        missing.push("python test peers (target/peers/venv)".to_string());
    }
    if !node_ok() {
        missing.push("node test peers (target/peers/node)".to_string());
    }
    missing
}

/// Install (or bring up to date) both halves; prints one line per item.
/// `apt_get` is setup's apt command builder (for nodejs/npm when absent).
pub fn install(apt_get: impl Fn() -> Command) -> Result<()> {
    std::fs::create_dir_all(peers_dir())
        .with_context(|| format!("create {}", peers_dir().display()))?;
    install_venv()?;
    install_node(apt_get)?;
    Ok(())
}

fn install_venv() -> Result<()> {
    let venv = venv_dir();
    let want = venv_want()?;
    if venv.join("bin/python").exists() && stamp_matches(&venv_stamp(), &want) {
        println!(
            "ok: python test peers already installed ({})",
            venv.display()
        );
        return Ok(());
    }
    let lock = source_dir().join("requirements.lock");
    println!(
        "installing python test peers into {} from {}",
        venv.display(),
        lock.display()
    );
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} not found: install Debian's python3 and python3-venv (`apt-get install python3 python3-venv`, which `cargo xtask setup` does as root)");
    }
    // A stale or half-made venv is rebuilt from scratch: the lock is the truth.
    let _ = std::fs::remove_file(venv_stamp());
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .with_context(|| format!("remove the old venv {}", venv.display()))?;
    }
    run(Command::new(PYTHON).arg("-m").arg("venv").arg(&venv)).with_context(|| {
        format!(
            "cannot create the venv {}: Debian's python3 needs the python3-venv package \
             (`apt-get install python3-venv`, which `cargo xtask setup` does as root)",
            venv.display()
        )
    })?;
    let pip = venv.join("bin/pip");
    run(Command::new(&pip)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .args(["install", "--quiet", "--no-input", "--require-hashes", "-r"])
        .arg(&lock))
    .with_context(|| {
        format!(
            "pip could not install {}: is PyPI reachable? If a hash mismatches, the lock \
             is stale: regenerate it with tests/peers/relock.sh",
            lock.display()
        )
    })?;
    run(Command::new(&pip)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .arg("check"))
    .context("`pip check` found broken requirements in the peers venv: regenerate the lock with tests/peers/relock.sh")?;
    std::fs::write(venv_stamp(), &want)
        .with_context(|| format!("write {}", venv_stamp().display()))?;
    println!("ok: python test peers installed ({})", venv.display());
    Ok(())
}

fn install_node(apt_get: impl Fn() -> Command) -> Result<()> {
    // Node.js and npm: the machine usually has Node 20 with npm bundled;
    // otherwise Debian's packages.
    let mut apt = Vec::new();
    if !succeeds("node", &["--version"]) {
        apt.push("nodejs");
    }
    if !succeeds("npm", &["--version"]) {
        apt.push("npm");
    }
    if apt.is_empty() {
        println!("ok: node and npm already present");
    } else {
        if !is_root() {
            bail!(
                "the node test peers need {pkgs}: re-run `cargo xtask setup` as root, or \
                 install them first with `sudo apt-get install {pkgs}`",
                pkgs = apt.join(" ")
            );
        }
        for pkg in &apt {
            println!("installing {pkg}");
        }
        run(apt_get().arg("update"))?;
        run(apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&apt))?;
    }
    let node_version = version_of("node").unwrap_or_default();
    if !node_at_least(&node_version, NODE_MIN) {
        println!(
            "warning: node {node_version} is older than {}.{} which @copilotkit/aimock \
             declares; if the LLM mock fails to start, install Node.js 20 (NodeSource) \
             and re-run `cargo xtask setup`",
            NODE_MIN.0, NODE_MIN.1
        );
    }

    let dir = node_dir();
    let want = node_want()?;
    if dir.join("node_modules").is_dir() && stamp_matches(&node_stamp(), &want) {
        println!("ok: node test peers already installed ({})", dir.display());
        return Ok(());
    }
    println!("installing node test peers into {} (npm ci)", dir.display());
    let _ = std::fs::remove_file(node_stamp());
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        let from = source_dir().join("node").join(file);
        std::fs::copy(&from, dir.join(file))
            .with_context(|| format!("copy {} to {}", from.display(), dir.display()))?;
    }
    let mut npm = Command::new("npm");
    npm.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    run(&mut npm).with_context(|| {
        format!(
            "`{}` in {} failed: is the npm registry reachable? If the lock disagrees with \
             package.json, regenerate it with `npm install` in tests/peers/node",
            display_cmd(&npm),
            dir.display()
        )
    })?;
    std::fs::write(node_stamp(), &want)
        .with_context(|| format!("write {}", node_stamp().display()))?;
    println!("ok: node test peers installed ({})", dir.display());
    Ok(())
}

/// `v20.20.2` ≥ (20, 15)?
fn node_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[b"abc"]), fnv1a(&[b"abc"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn compares_node_versions() {
        assert!(node_at_least("v20.20.2", (20, 15)));
        assert!(node_at_least("v22.1.0", (20, 15)));
        assert!(!node_at_least("v18.20.4", (20, 15)));
        assert!(!node_at_least("", (20, 15)));
    }
}
