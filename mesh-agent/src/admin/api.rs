//! Request and response bodies of the admin API (shared by server and client).
use serde::{Deserialize, Serialize};

use crate::{records::ConnectionRecord, state::AgentStatus};

pub const STATUS: &str = "/v1/status";
pub const TAG: &str = "/v1/tag";
pub const UNTAG: &str = "/v1/untag";
pub const QUARANTINE: &str = "/v1/quarantine";
pub const RELEASE: &str = "/v1/release";
pub const EXEC: &str = "/v1/exec";
pub const EXEC_ATTACH: &str = "/v1/exec/attach";
pub const EXEC_DONE: &str = "/v1/exec/done";
pub const RECORDS: &str = "/v1/records";
pub const POLICY_RELOAD: &str = "/v1/policy/reload";
pub const POLICY_EXPLAIN: &str = "/v1/policy/explain";
/// `GET /v1/budgets[?agent=NAME]`.
pub const BUDGETS: &str = "/v1/budgets";

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub listen: Vec<String>,
    pub attach_cgroup: String,
    pub parent_cgroup: String,
    pub policy_agents: Vec<String>,
    /// The policy in force: its generation (1 at start, +1 per reload that
    /// was put in force), when it was loaded (Unix ms) and where from.
    #[serde(default)]
    pub policy_generation: u64,
    #[serde(default)]
    pub policy_loaded_unix_ms: u64,
    #[serde(default)]
    pub policy_dir: String,
    pub active_connections: usize,
    pub agents: Vec<AgentStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TagRequest {
    pub cgroup: String,
    pub agent: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CgroupRequest {
    pub cgroup: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CgroupResponse {
    pub cgroup: String,
    pub cgroup_id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetRequest {
    /// An agent name, or a cgroup path (contains `/`).
    pub target: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetResponse {
    pub target: String,
    pub cgroups_changed: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExecRequest {
    pub agent: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AttachRequest {
    pub cgroup: String,
    pub pid: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordsResponse {
    pub records: Vec<ConnectionRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /v1/policy/reload` (no body). `ok`: the new policy is in force with
/// `generation`; else `errors` says why and `generation` is the one still in
/// force. A refused reload is answered 422.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub ok: bool,
    pub generation: u64,
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<PolicyErrorBody>,
    /// Every error, one `file:line:col: message` per line (what clients that
    /// only read `error` show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One policy error; `line` and `column` are 0 for a whole-file problem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyErrorBody {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// `file:line:col: message`.
    pub text: String,
}

impl From<&crate::policy::PolicyError> for PolicyErrorBody {
    fn from(e: &crate::policy::PolicyError) -> Self {
        PolicyErrorBody {
            file: e.file.clone(),
            line: e.line,
            column: e.column,
            message: e.message.clone(),
            text: e.to_string(),
        }
    }
}

/// `meshctl budget show`: every budget of the policy in force, per agent.
#[derive(Debug, Serialize, Deserialize)]
pub struct BudgetsResponse {
    pub agents: Vec<AgentBudgets>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentBudgets {
    pub agent: String,
    pub budgets: Vec<BudgetEntry>,
}

/// One budget's state. Amounts are in `unit`: whole tokens or calls, or USD
/// (a decimal number).
#[derive(Debug, Serialize, Deserialize)]
pub struct BudgetEntry {
    pub name: String,
    /// `tokens`, `usd` or `calls`.
    pub unit: String,
    pub limit: serde_json::Number,
    /// Settled spend within the window.
    pub used: serde_json::Number,
    /// Held by calls in flight.
    pub reserved: serde_json::Number,
    pub remaining: serde_json::Number,
    pub window_secs: u64,
    /// `halt`, `quarantine` or `escalate`.
    pub on_exhaust: String,
}
