//! mesh-agent: the daemon and the operator CLI over one library.
pub mod admin;
pub mod bpf;
pub mod budget;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod l7;
pub mod metrics;
pub mod policy;
pub mod policy_watch;
pub mod proxy;
pub mod records;
pub mod state;
