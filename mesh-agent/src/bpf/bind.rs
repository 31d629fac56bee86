//! User-space handle of `mesh-ebpf/src/bind.rs` (cgroup/bind4, bind6).
use std::os::fd::BorrowedFd;

use aya::{programs::links::FdLink, Ebpf};
use mesh_common::program_names::{BIND4, BIND6};

use super::{attach_sock_addr, BpfError};

pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    attach_sock_addr(ebpf, cgroup, [BIND4, BIND6])
}
