//! The capabilities the daemon needs, checked at start so that a missing one
//! is named instead of failing later with a bare EPERM.
use anyhow::{bail, Context as _};

use crate::config::REQUIRED_CAPABILITIES;

/// Names the capabilities the daemon lacks, from /proc/self/status.
pub fn check_privileges() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    let missing: Vec<String> = REQUIRED_CAPABILITIES
        .iter()
        .filter(|(bit, _, _)| cap_eff & (1u64 << bit) == 0)
        .map(|(_, name, why)| format!("{name} (to {why})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "mesh-agent is missing capabilities: {}; run it as root or grant them (see deploy/mesh-agent.service)",
            missing.join(", ")
        );
    }
    Ok(())
}
