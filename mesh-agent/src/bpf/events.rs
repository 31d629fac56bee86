//! Reader of `MESH_EVENTS`: socket calls the kernel refused or could not
//! record.
use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use mesh_common::{map_names::EVENTS, ConnectEvent};
use tokio::io::unix::AsyncFd;

use super::{maps::take_map, BpfError};

pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<EventReader, BpfError> {
        Ok(EventReader {
            ring: take_map(ebpf, EVENTS)?,
        })
    }

    /// Delivers every event to `sink` as it arrives, until the task is dropped.
    pub async fn run(self, mut sink: impl FnMut(ConnectEvent)) -> std::io::Result<()> {
        // SAFETY: the ring buffer owns its fd, which stays open for as long as
        // the AsyncFd holds it.
        let mut fd =
            unsafe { AsyncFd::register_with_interest(self.ring, tokio::io::Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        loop {
            let mut guard = fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(event) = decode(&item) {
                    sink(event);
                }
            }
            guard.clear_ready();
        }
    }
}

fn decode(bytes: &[u8]) -> Option<ConnectEvent> {
    if bytes.len() < std::mem::size_of::<ConnectEvent>() {
        return None;
    }
    // SAFETY: ConnectEvent is plain old data of exactly this size; the read
    // is unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnectEvent>()) })
}
