//! One accepted connection, top-down: the kernel's record of where it was
//! going and for whom → the agent's identity → what it speaks, sniffed from
//! its first bytes → the path that serves it: the opaque relay
//! (`opaque.rs`), TLS passthrough or termination (`terminate.rs`), or HTTP
//! (`serve_http.rs`).
use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::{io::AsyncReadExt as _, net::TcpStream, sync::watch};
use tracing::{info_span, Instrument as _};

use super::{
    io::Prefixed,
    sniff::{self, SniffStatus, Sniffed},
    Conn, Proxy,
};
use crate::{
    addr::{ClientAddr, OrigDst},
    l7::Protocol,
    records::{Identity, Verdict},
};

/// The rule a connection is refused under when its destination is governed
/// above TCP and it sent nothing mesh can read as that protocol.
pub const RULE_L7_UNREADABLE: &str = "l7.unreadable";

impl Proxy {
    /// Serves one accepted connection to its end, from the kernel's record
    /// to the path its first bytes choose.
    pub(super) async fn handle(
        self: Arc<Self>,
        client: TcpStream,
        client_addr: ClientAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut conn = Conn::new(client_addr);
        let Some(kernel) = self.orig_dst.take(&client_addr.peer_key()) else {
            // Not redirected by our programs (a direct connection to the
            // listener): never dial anything for it.
            let reason = "the kernel recorded no original destination for this connection";
            self.finish(
                &conn,
                Verdict::NoOriginalDestination,
                "no-original-destination",
                Some(reason.into()),
                (0, 0),
            );
            return;
        };
        let dst = OrigDst::from_kernel(&kernel.addr, kernel.port);
        let agent = self.governor.agent_name(kernel.agent_id);
        let span = info_span!(
            "conn",
            agent = agent.as_deref().unwrap_or("-"),
            cgroup_id = kernel.cgroup_id,
            pid = kernel.tgid,
            dst = %dst,
        );
        conn.dst = Some(dst);
        conn.identity = Some(Identity::from_kernel(&kernel, agent));
        async {
            let Some(agent) = conn.identity.as_ref().and_then(|i| i.agent.clone()) else {
                let reason = format!(
                    "agent id {:#x} has no name (untagged meanwhile)",
                    kernel.agent_id
                );
                self.refuse(&conn, client, "unknown-agent", reason);
                return;
            };
            // One agent's flood is bounded by its own limit, not by what
            // the others leave over.
            conn.slot = match self.limits.connect(&agent) {
                Ok(slot) => Some(slot),
                Err(at) => {
                    drop(client);
                    let rule = at.rule();
                    self.finish(
                        &conn,
                        Verdict::RefusedPolicy,
                        rule,
                        Some(at.to_string()),
                        (0, 0),
                    );
                    return;
                }
            };
            let mut client = client;
            // A destination governed above TCP is never relayed as opaque
            // bytes: its client gets longer to speak, then is refused.
            let above_tcp = self
                .policies
                .snapshot()
                .l7_entry_for(&agent, dst.normalized(), None)
                .is_some();
            let timeout = match above_tcp {
                true => self.l7.l7_sniff_timeout,
                false => self.l7.sniff_timeout,
            };
            let (prefix, sniffed) = sniff_client(&mut client, timeout).await;
            match sniffed {
                Sniffed::Opaque if above_tcp => {
                    conn.protocol = Some(Protocol::Tcp);
                    let policy = self.policies.snapshot();
                    let entry = policy.l7_entry_for(&agent, dst.normalized(), None);
                    let reason = format!(
                        "{dst} is governed above TCP by {}, and the connection sent \
                         {} bytes that are neither HTTP nor TLS{}",
                        entry.map_or_else(|| "the policy".to_owned(), |e| e.to_string()),
                        prefix.len(),
                        if prefix.len() < sniff::SNIFF_MAX_BYTES {
                            format!(" before it went quiet or closed (waited {timeout:?})")
                        } else {
                            String::new()
                        },
                    );
                    self.refuse(&conn, client, RULE_L7_UNREADABLE, reason);
                }
                Sniffed::Opaque => {
                    conn.protocol = Some(Protocol::Tcp);
                    self.relay_opaque(conn, &agent, client, prefix).await;
                }
                Sniffed::Tls(hello) => {
                    conn.protocol = Some(Protocol::Tls);
                    conn.server_name = hello.sni.clone();
                    self.handle_tls(conn, agent, client, prefix, hello, shutdown)
                        .await;
                }
                Sniffed::Http1 | Sniffed::Http2PriorKnowledge => {
                    conn.protocol = Some(Protocol::Http);
                    let h2 = sniffed == Sniffed::Http2PriorKnowledge;
                    let io = Prefixed::new(prefix, client);
                    self.serve_http(conn, agent, io, h2, None, shutdown).await;
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Reads the client's first bytes until the protocol is known, the client
/// goes quiet for `timeout` (server-speaks-first protocols: opaque) or
/// closes. The bytes read are returned to be replayed.
async fn sniff_client(client: &mut TcpStream, timeout: Duration) -> (Bytes, Sniffed) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sniff::sniff(&buf) {
            SniffStatus::Done(s) if !buf.is_empty() => return (buf.freeze(), s),
            _ => {}
        }
        if buf.len() >= sniff::SNIFF_MAX_BYTES {
            let s = sniff::sniff_final(&buf);
            return (buf.freeze(), s);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            // Closed, failed or quiet: decide on what there is.
            _ => {
                let s = sniff::sniff_final(&buf);
                return (buf.freeze(), s);
            }
        }
    }
}
