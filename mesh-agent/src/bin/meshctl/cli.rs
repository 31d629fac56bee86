//! meshctl's command line: its flags, subcommands and their parsers.
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_agent::config::{ADMIN_SOCKET_ENV, DEFAULT_ADMIN_SOCKET};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "mesh operator CLI")]
pub(crate) struct Cli {
    /// The daemon's admin socket.
    #[arg(long, global = true, env = ADMIN_SOCKET_ENV, default_value = DEFAULT_ADMIN_SOCKET)]
    pub(crate) socket: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    pub(crate) output: Output,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Human,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Agents, governed cgroups, kernel counters and quarantine state.
    Status,
    /// Run CMD as agent NAME in a fresh governed cgroup; exits with CMD's code.
    Exec {
        #[arg(long)]
        agent: String,
        /// Run CMD as this user (needs root). Agents should run as a user of
        /// their own: not root, and not an admin operator.
        #[arg(long)]
        user: Option<String>,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Govern a cgroup (and its subtree) as an agent.
    Tag {
        cgroup: String,
        #[arg(long)]
        agent: String,
    },
    /// Stop governing a cgroup.
    Untag { cgroup: String },
    /// Refuse new connects and stop traffic of an agent or a cgroup, in the kernel.
    Quarantine { target: String },
    /// Lift a quarantine.
    Release { target: String },
    /// Internal: the first stage of `exec`.
    #[command(hide = true)]
    ExecGate {
        #[arg(long)]
        fd: i32,
        #[arg(long)]
        user: Option<String>,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Check, reload and explain policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Connection records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Budgets: spend against the policy's limits.
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum BudgetCommand {
    /// Per agent and budget: used (settled in the window), reserved (calls
    /// in flight), remaining, window.
    Show {
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// The most recent connection records.
    Tail {
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate the policy files of DIR without a daemon; lists every error
    /// as file:line:col: message.
    Check { dir: PathBuf },
    /// Make the daemon reload its policy directory now.
    Reload,
    /// Which rule would decide a tool call, against the policy in force;
    /// exits 0 when it would be allowed, 1 when refused or held.
    Explain {
        #[arg(long)]
        agent: String,
        /// An MCP server's name in the agent's policy, or its host:port.
        #[arg(long)]
        server: String,
        #[arg(long)]
        tool: String,
        /// The call's arguments, a JSON object (for `when` conditions).
        #[arg(long, value_parser = parse_args_json)]
        args: Option<serde_json::Value>,
    },
}

/// `--args`: a JSON object; a parse error is a usage error (exit 2).
pub(crate) fn parse_args_json(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err("expected a JSON object, e.g. '{\"amount\": 10}'".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_must_be_a_json_object() {
        assert!(parse_args_json(r#"{"a": 1}"#).is_ok());
        let err = parse_args_json("{a: 1}").unwrap_err();
        assert!(err.contains("key must be a string"), "{err}");
        assert!(parse_args_json("[1]").is_err());
    }
}
