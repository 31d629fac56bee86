//! User-space handle of `mesh-ebpf/src/connect.rs` (cgroup/connect4, connect6).
use std::os::fd::BorrowedFd;

use aya::{programs::links::FdLink, Ebpf};
use mesh_common::program_names::{CONNECT4, CONNECT6};

use super::{attach_sock_addr, BpfError};

pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    attach_sock_addr(ebpf, cgroup, [CONNECT4, CONNECT6])
}
