//! User-space handle of `mesh-ebpf/src/cgroup_skb.rs` (ingress and egress).
use std::os::fd::BorrowedFd;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, links::FdLink},
};
use mesh_common::program_names::{SKB_EGRESS, SKB_INGRESS};

use super::BpfError;

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    let mut links = Vec::with_capacity(2);
    for (name, attach_type) in
        [(SKB_INGRESS, CgroupSkbAttachType::Ingress), (SKB_EGRESS, CgroupSkbAttachType::Egress)]
    {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(|source| BpfError::Program { name, source })?;
        prog.load().map_err(|source| BpfError::Program { name, source })?;
        let id = prog
            .attach(cgroup, attach_type, CgroupAttachMode::Single)
            .map_err(|source| BpfError::Program { name, source })?;
        let link = prog.take_link(id).map_err(|source| BpfError::Program { name, source })?;
        let link = FdLink::try_from(link)
            .map_err(|e| BpfError::Link { path: name.into(), message: e.to_string() })?;
        links.push((name, link));
    }
    Ok(links)
}
