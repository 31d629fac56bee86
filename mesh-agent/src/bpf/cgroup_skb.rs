//! User-space handle of `mesh-ebpf/src/cgroup_skb.rs` (ingress and egress).
use std::os::fd::BorrowedFd;

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
    Ebpf,
};
use mesh_common::program_names::{SKB_EGRESS, SKB_INGRESS};

use super::{load_and_attach, BpfError};

pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    [
        (SKB_INGRESS, CgroupSkbAttachType::Ingress),
        (SKB_EGRESS, CgroupSkbAttachType::Egress),
    ]
    .into_iter()
    .map(|(name, attach_type)| {
        load_and_attach(ebpf, name, |prog: &mut CgroupSkb| {
            prog.load()?;
            let id = prog.attach(cgroup, attach_type, CgroupAttachMode::Single)?;
            prog.take_link(id)
        })
    })
    .collect()
}
