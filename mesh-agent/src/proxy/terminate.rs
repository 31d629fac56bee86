//! TLS the mesh may read: passthrough goes to the opaque relay; terminate
//! decides the destination first, then completes the agent's handshake with a
//! leaf from the mesh CA, picks the upstream TLS leg, and serves the
//! decrypted HTTP (`serve_http.rs`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::{net::TcpStream, sync::watch};

use super::{
    http::TlsLeg, io::Prefixed, pool::UpstreamTls, sniff, tls, vouch::RULE_NAME_UNBOUND, Conn,
    Proxy,
};
use crate::{
    policy::{EgressDecision, EgressPolicy as _, TlsMode},
    records::Verdict,
};

/// The rule TLS to a destination governed above TCP is refused under when
/// the mesh does not terminate it.
pub const RULE_TLS_UNREAD: &str = "tls.passthrough";

impl Proxy {
    pub(super) async fn handle_tls(
        self: Arc<Self>,
        conn: Conn,
        agent: Arc<str>,
        client: TcpStream,
        prefix: Bytes,
        hello: sniff::ClientHello,
        shutdown: watch::Receiver<bool>,
    ) {
        let Some(dst) = conn.dst else { return };
        let sni = hello.sni.as_deref();
        let policy = self.policies.snapshot();
        // With Encrypted Client Hello the SNI is only the public name: it
        // cannot decide where the connection goes.
        if let Some(outer) =
            sni.filter(|s| hello.ech && policy.name_allows(&agent, s, dst.0.port()))
        {
            let reason = format!(
                "the client offered Encrypted Client Hello: its SNI {outer:?} is only the \
                 public name, and a name decides egress here"
            );
            self.refuse(&conn, client, RULE_NAME_UNBOUND, reason);
            return;
        }
        let upstream_ca = match policy.tls_mode(&agent, dst.normalized(), sni) {
            TlsMode::Passthrough => {
                // Calls the policy governs cannot be read inside TLS the mesh
                // does not terminate: refused, never passed through unread.
                if let Some(entry) = policy.l7_entry_for(&agent, dst.normalized(), sni) {
                    let reason = format!(
                        "{dst}{} is governed above TCP by {entry}, but its TLS is not \
                         terminated by the mesh, so its calls cannot be read (add the \
                         destination to tls.terminate)",
                        sni.map(|s| format!(" (SNI {s:?})")).unwrap_or_default(),
                    );
                    self.refuse(&conn, client, RULE_TLS_UNREAD, reason);
                    return;
                }
                return self.relay_opaque(conn, &agent, client, prefix).await;
            }
            TlsMode::Terminate { upstream_ca } => upstream_ca,
        };
        // The L4/SNI decision first: a refused destination never sees a
        // handshake from the mesh either.
        if let Err(unbound) = self.vouch(&policy, &agent, dst, sni).await {
            self.refuse(&conn, client, RULE_NAME_UNBOUND, unbound.to_string());
            return;
        }
        if let EgressDecision::Refuse { rule, reason } =
            policy.decide_egress(&agent, dst.normalized(), sni)
        {
            self.refuse(&conn, client, &rule, reason);
            return;
        }
        let Some(ca) = self.mesh_ca.clone() else {
            let reason = "tls: terminate is configured but the mesh CA is not available";
            self.finish(
                &conn,
                Verdict::RefusedPolicy,
                "tls.terminate",
                Some(reason.into()),
                (0, 0),
            );
            return;
        };
        // Offer the client only what the mesh speaks, in the client's order;
        // the upstream leg offers the protocol chosen here.
        let alpn: Vec<Vec<u8>> = hello
            .alpn
            .iter()
            .filter(|p| p.as_slice() == b"h2" || p.as_slice() == b"http/1.1")
            .cloned()
            .collect();
        let fallback = dst.0.ip().to_string();
        let config = match tls::server_config_for(ca, fallback, alpn) {
            Ok(c) => c,
            Err(e) => {
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(e.to_string()),
                    (0, 0),
                );
                return;
            }
        };
        let accepted = tokio_rustls::TlsAcceptor::from(config)
            .accept(Prefixed::new(prefix, client))
            .await;
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Typically the agent does not trust the mesh CA.
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(format!("TLS handshake with the agent failed: {e}")),
                    (0, 0),
                );
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let upstream = match self.upstream_tls.get(upstream_ca, h2) {
            Ok(u) => u,
            Err(e) => {
                self.finish(
                    &conn,
                    Verdict::UpstreamFailed,
                    "tls.terminate",
                    Some(e),
                    (0, 0),
                );
                return;
            }
        };
        let leg = TlsLeg {
            sni: hello.sni.as_deref().map(Arc::from),
            upstream,
        };
        self.serve_http(conn, agent, stream, h2, Some(leg), shutdown)
            .await;
    }
}

/// An upstream TLS client config's key: the extra CA file and whether HTTP/2
/// is offered.
type UpstreamTlsKey = (Option<Arc<str>>, bool);

/// Upstream TLS client configs by (extra CA file, HTTP/2 offered), each
/// built once.
#[derive(Default)]
pub(super) struct UpstreamTlsConfigs(Mutex<HashMap<UpstreamTlsKey, UpstreamTls>>);

impl UpstreamTlsConfigs {
    pub(super) fn get(&self, extra_ca: Option<Arc<str>>, h2: bool) -> Result<UpstreamTls, String> {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = cache.get(&(extra_ca.clone(), h2)) {
            return Ok(u.clone());
        }
        let alpn = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = tls::client_config(extra_ca.as_deref().map(std::path::Path::new), alpn)
            .map_err(|e| e.to_string())?;
        let u = UpstreamTls {
            config,
            extra_ca: extra_ca.clone(),
        };
        cache.insert((extra_ca, h2), u.clone());
        Ok(u)
    }
}
