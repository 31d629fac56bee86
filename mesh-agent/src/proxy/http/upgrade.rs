//! Protocol upgrades (WebSocket, HTTP/1.1 only): once the server agrees
//! (101), both connections are handed over by hyper and relayed as bytes.
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderMap, HeaderValue},
    http::{request::Parts, response},
    upgrade::OnUpgrade,
    Response, StatusCode,
};
use hyper_util::rt::TokioIo;

use super::exchange::Exchange;
use crate::{l7::OutcomeStatus, proxy::pool::ProxyBody};

/// An agent's request to switch protocols.
pub(super) struct Upgrade {
    /// Its `Upgrade` header, forwarded as it came.
    pub value: Option<HeaderValue>,
    /// The agent's side of the connection, once the server agrees.
    pub on: Option<OnUpgrade>,
}

impl Upgrade {
    /// The request's upgrade, when it asks for one.
    pub fn take(parts: &mut Parts) -> Option<Upgrade> {
        wants_upgrade(&parts.headers).then(|| Upgrade {
            value: parts.headers.get(header::UPGRADE).cloned(),
            on: parts.extensions.remove::<OnUpgrade>(),
        })
    }
}

/// `Connection: upgrade` with an `Upgrade` header (HTTP/1.1 only).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The server agreed to an upgrade: both sides' connections are handed
/// over by hyper and relayed as bytes until either closes.
pub(super) fn switch_protocols(
    mut ex: Exchange,
    client: Option<OnUpgrade>,
    rparts: response::Parts,
    rbody: Incoming,
) -> Response<ProxyBody> {
    ex.summary.http_status = rparts.status.as_u16();
    let mut upstream_resp = Response::from_parts(rparts.clone(), rbody);
    let upstream = hyper::upgrade::on(&mut upstream_resp);
    if let Some(client) = client {
        tokio::spawn(async move {
            match tokio::try_join!(client, upstream) {
                Ok((c, u)) => {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        Ok((up, down)) => {
                            ex.summary.request_bytes += up;
                            ex.summary.response_bytes = down;
                        }
                        Err(e) => ex.reason = Some(format!("upgraded connection: {e}")),
                    }
                }
                Err(e) => ex.reason = Some(format!("upgrade failed: {e}")),
            }
            ex.finish(OutcomeStatus::Http { status: 101 }, false, None);
        });
    }
    let mut resp = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = rparts.headers;
    resp
}
