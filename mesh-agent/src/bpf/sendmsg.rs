//! User-space handle of `mesh-ebpf/src/sendmsg.rs` (cgroup/sendmsg4, sendmsg6).
use std::os::fd::BorrowedFd;

use aya::{programs::links::FdLink, Ebpf};
use mesh_common::program_names::{SENDMSG4, SENDMSG6};

use super::{attach_sock_addr, BpfError};

pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    attach_sock_addr(ebpf, cgroup, [SENDMSG4, SENDMSG6])
}
