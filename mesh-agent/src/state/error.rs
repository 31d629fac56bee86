//! What a governor operation can fail with, and how the admin API tells a
//! caller's mistake from the daemon's.
use crate::{bpf::BpfError, cgroup::CgroupError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid agent name {0:?}: use 1 to 56 characters of A-Z a-z 0-9 . _ -")]
    BadAgentName(String),
    #[error("agent name {name:?} collides with agent {other:?} (same id); choose another name")]
    AgentIdCollision { name: String, other: String },
    #[error("{0} is already governed by agent {1:?}; untag it first")]
    AlreadyTagged(String, String),
    #[error("{0} is not tagged")]
    NotTagged(String),
    #[error("{0} is not governed by any agent")]
    NotGoverned(String),
    #[error("no cgroup is tagged for agent {0:?}")]
    UnknownAgent(String),
    #[error("agent {0:?} is quarantined in freeze mode; `meshctl release {0}` first")]
    Frozen(String),
    #[error("no process {0}")]
    NoSuchProcess(u32),
    #[error("process {0} is not a child of the caller running as the caller's user")]
    NotYourProcess(u32),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

impl StateError {
    /// Whether the request named something that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StateError::Cgroup(CgroupError::NotFound(_))
                | StateError::NotTagged(_)
                | StateError::NotGoverned(_)
                | StateError::UnknownAgent(_)
                | StateError::NoSuchProcess(_)
        )
    }

    /// Whether the request itself was wrong (as opposed to the daemon failing).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            StateError::Bpf(_) | StateError::Cgroup(CgroupError::Io { .. })
        )
    }
}
