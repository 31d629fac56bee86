//! User-space handle of `mesh-ebpf/src/cgroup_skb.rs` (ingress and egress).
use std::os::fd::BorrowedFd;

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, links::FdLink},
};
use mesh_common::program_names::{SKB_EGRESS, SKB_INGRESS};

use super::{BpfError, load_and_attach};

pub fn attach(ebpf: &mut Ebpf, cgroup: BorrowedFd<'_>) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    [(SKB_INGRESS, CgroupSkbAttachType::Ingress), (SKB_EGRESS, CgroupSkbAttachType::Egress)]
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
