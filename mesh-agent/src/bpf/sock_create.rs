//! User-space handle of `mesh-ebpf/src/sock_create.rs` (cgroup/sock_create).
use std::os::fd::BorrowedFd;

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSock},
    Ebpf,
};
use mesh_common::program_names::SOCK_CREATE;

use super::{load_and_attach, BpfError};

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<(&'static str, FdLink), BpfError> {
    load_and_attach(ebpf, SOCK_CREATE, |prog: &mut CgroupSock| {
        prog.load()?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
        prog.take_link(id)
    })
}
