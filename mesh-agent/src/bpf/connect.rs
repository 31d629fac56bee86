//! User-space handle of `mesh-ebpf/src/connect.rs` (cgroup/connect4, connect6).
use std::os::fd::BorrowedFd;

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use mesh_common::program_names::{CONNECT4, CONNECT6};

use super::{load_and_attach, BpfError};

pub fn attach(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
    [CONNECT4, CONNECT6]
        .into_iter()
        .map(|name| {
            load_and_attach(ebpf, name, |prog: &mut CgroupSockAddr| {
                prog.load()?;
                let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
                prog.take_link(id)
            })
        })
        .collect()
}
