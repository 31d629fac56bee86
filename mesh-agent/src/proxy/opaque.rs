//! Opaque TCP and TLS passthrough: the L4/SNI decision, then the bytes,
//! relayed to the original destination (`relay.rs`) after the ones read
//! while sniffing.
use bytes::Bytes;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tracing::debug;

use super::{conn::connect_upstream, relay, vouch::RULE_NAME_UNBOUND, Conn, Proxy};
use crate::{
    policy::{EgressDecision, EgressPolicy as _},
    records::Verdict,
};

impl Proxy {
    /// Opaque TCP and TLS passthrough: the L4/SNI decision, then bytes.
    pub(super) async fn relay_opaque(
        &self,
        conn: Conn,
        agent: &str,
        client: TcpStream,
        prefix: Bytes,
    ) {
        let Some(dst) = conn.dst else { return };
        let policy = self.policies.snapshot();
        if let Err(unbound) = self
            .vouch(&policy, agent, dst, conn.server_name.as_deref())
            .await
        {
            self.refuse(&conn, client, RULE_NAME_UNBOUND, unbound.to_string());
            return;
        }
        let rule = match policy.decide_egress(agent, dst.normalized(), conn.server_name.as_deref())
        {
            EgressDecision::Refuse { rule, reason } => {
                debug!(%rule, %reason, "egress refused");
                self.refuse(&conn, client, &rule, reason);
                return;
            }
            EgressDecision::Allow { rule } => rule,
        };
        let mut upstream = match connect_upstream(self.sockets.as_ref(), dst).await {
            Ok(upstream) => upstream,
            Err(e) => {
                // Reset, so the agent sees a failed connection as it would
                // have without the mesh.
                let _ = client.set_zero_linger();
                drop(client);
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    &rule,
                    Some(e.to_string()),
                    (0, 0),
                );
                return;
            }
        };
        // The bytes read while sniffing go first.
        if let Err(e) = upstream.write_all(&prefix).await {
            self.finish(
                &conn,
                Verdict::UpstreamFailed,
                &rule,
                Some(e.to_string()),
                (0, 0),
            );
            return;
        }
        let (up, down) = relay::relay(client, upstream).await;
        self.finish(
            &conn,
            Verdict::Forwarded,
            &rule,
            None,
            (up + prefix.len() as u64, down),
        );
    }
}
