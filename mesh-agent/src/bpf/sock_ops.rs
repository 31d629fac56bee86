//! User-space handle of `mesh-ebpf/src/sock_ops.rs`.
use std::os::fd::BorrowedFd;

use aya::{
    programs::{links::FdLink, CgroupAttachMode, SockOps},
    Ebpf,
};
use mesh_common::program_names::SOCK_OPS;

use super::{load_and_attach, BpfError};

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<(&'static str, FdLink), BpfError> {
    load_and_attach(ebpf, SOCK_OPS, |prog: &mut SockOps| {
        prog.load()?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
        prog.take_link(id)
    })
}
