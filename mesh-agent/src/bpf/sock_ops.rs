//! User-space handle of `mesh-ebpf/src/sock_ops.rs`.
use std::os::fd::BorrowedFd;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, SockOps, links::FdLink},
};
use mesh_common::program_names::SOCK_OPS;

use super::BpfError;

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<(&'static str, FdLink), BpfError> {
    let name = SOCK_OPS;
    let prog: &mut SockOps = ebpf
        .program_mut(name)
        .ok_or(BpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| BpfError::Program { name, source })?;
    prog.load().map_err(|source| BpfError::Program { name, source })?;
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|source| BpfError::Program { name, source })?;
    let link = prog.take_link(id).map_err(|source| BpfError::Program { name, source })?;
    let link = FdLink::try_from(link)
        .map_err(|e| BpfError::Link { path: name.into(), message: e.to_string() })?;
    Ok((name, link))
}
