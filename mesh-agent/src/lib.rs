//! mesh-agent: the daemon and the operator CLI over one library.
//!
//! The pure parts live in crates of their own, fenced from sockets and BPF:
//! `mesh-l7` (parsers), `mesh-policy` (policy and decisions) and `mesh-budget`
//! (the ledger). They are re-exported here so the daemon reads as one tree.
pub use mesh_budget as budget;
pub use mesh_l7 as l7;
pub use mesh_policy as policy;

pub mod addr;
pub mod admin;
pub mod bpf;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod jobs;
pub mod kernel_events;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod policy_watch;
pub mod privileges;
pub mod proxy;
pub mod quarantine_triggers;
pub mod records;
pub mod state;
pub mod unix_names;
