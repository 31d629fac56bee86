//! The test bed shared by the end-to-end tests (`tests/`), `cargo xtask
//! bench`, `cargo xtask demo` and `cargo xtask run`: free loopback ports,
//! cgroup v2 helpers, the daemon's config file written from a typed struct,
//! and a guard that starts mesh-agent, waits until it is ready and stops it
//! (and, when asked, removes its pins and cgroups), on failure too.
//!
//! Standard library and libc only: xtask depends on it, and xtask must
//! build fast and without the daemon's dependencies.

mod cgroup;
mod config;
mod daemon;
mod http;
mod ports;
mod process;

pub use cgroup::{
    bpffs_mounted_at, cgroup2_mount, command_in_cgroup, mounts, remove_cgroup_tree, Mount,
};
pub use config::{yaml_str, DaemonConfig};
pub use daemon::{run_command, Daemon, DaemonOptions, Footprint, StartError, READY_WITHIN};
pub use http::http_get;
pub use ports::{free_port, free_port_pair, preferred_port};
pub use process::{terminate, wait_or_kill};
