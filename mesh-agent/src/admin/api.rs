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

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub listen: Vec<String>,
    pub attach_cgroup: String,
    pub parent_cgroup: String,
    pub policy_agents: Vec<String>,
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
