//! User-space handle of `mesh-ebpf/src/connect.rs` (cgroup/connect4, connect6).
use std::os::fd::BorrowedFd;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink},
};
use mesh_common::program_names::{CONNECT4, CONNECT6};

use super::BpfError;

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    let mut links = Vec::with_capacity(2);
    for name in [CONNECT4, CONNECT6] {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(|source| BpfError::Program { name, source })?;
        prog.load().map_err(|source| BpfError::Program { name, source })?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|source| BpfError::Program { name, source })?;
        let link = prog.take_link(id).map_err(|source| BpfError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| BpfError::Link {
            path: name.into(),
            message: e.to_string(),
        })?;
        links.push((name, link));
    }
    Ok(links)
}
