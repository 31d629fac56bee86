//! Header hygiene: connection-level headers are not forwarded in either
//! direction, and the few header facts the pipeline reads (the name the
//! agent used, whether a body is an event stream).
use hyper::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    http::request::Parts,
    Uri,
};

use super::{exchange::Exchange, refuse::PolicyRefusal, upgrade::Upgrade, HttpConn};
use crate::l7::path::{self, PathError};
use crate::{
    policy::{Decision, PolicySet},
    proxy::RULE_NAME_UNBOUND,
};

/// Connection-level headers are not forwarded (RFC 9110 section 7.6.1), nor
/// those the `Connection` header names.
/// RFC 9110 7.6.1 hop-by-hop fields (lowercase, as `http` stores names);
/// `te` is kept when it only says `trailers`.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// The request's hop-by-hop headers go; a protocol upgrade (WebSocket)
/// keeps its Upgrade/Connection headers and is returned, to become a byte
/// relay once the server agrees (101).
pub(super) fn prepare_request(parts: &mut Parts) -> Option<Upgrade> {
    let upgrade = Upgrade::take(parts);
    strip_hop_by_hop(&mut parts.headers);
    if let Some(Upgrade {
        value: Some(value), ..
    }) = &upgrade
    {
        parts.headers.insert(header::UPGRADE, value.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    upgrade
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry at most `Connection: keep-alive` (or `close`):
    // one pass over the names decides whether anything needs removing.
    let mut connection_names_others = false;
    let mut any = false;
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            any = true;
            connection_names_others |= value.as_bytes().split(|&b| b == b',').any(|token| {
                let token = token.trim_ascii();
                !token.eq_ignore_ascii_case(b"keep-alive") && !token.eq_ignore_ascii_case(b"close")
            });
        } else if HOP_BY_HOP.contains(&name.as_str()) || name == header::TE {
            any = true;
        }
    }
    if !any {
        return;
    }
    if connection_names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|v| v != HeaderValue::from_static("trailers"))
    {
        headers.remove(header::TE);
    }
}

/// Rewrites the request's path to its canonical form (`l7::path`), so that
/// the server routes the path policy matched; refuses the spellings whose
/// meaning depends on the server.
pub(super) fn normalize_path(parts: &mut Parts) -> Result<(), PathError> {
    let Some(path) = path::normalize(parts.uri.path())? else {
        return Ok(());
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    // Only characters the original path had (or fewer) remain: it parses.
    uri.path_and_query = path_and_query.parse().ok();
    parts.uri = Uri::from_parts(uri).map_err(|_| PathError::BadEscape(path_and_query))?;
    Ok(())
}

/// The `Content-Type`, "" when absent or not text.
pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A `text/event-stream` body (SSE).
pub(super) fn is_event_stream(content_type: &str) -> bool {
    content_type.starts_with("text/event-stream")
}

/// The rule a request whose Host is not the SNI of its terminated TLS is
/// refused under.
pub const RULE_SNI_HOST: &str = "tls.sni_host";

impl HttpConn {
    /// Whether the name this request uses may decide it: on terminated TLS
    /// the Host must be the SNI the mesh terminated for, and a name that lets
    /// the agent through egress must resolve to the destination. None when
    /// it may go on.
    pub(super) async fn check_name(
        &self,
        ex: &Exchange,
        policy: &PolicySet,
        parts: &Parts,
    ) -> Option<PolicyRefusal> {
        if let (Some(sni), Some(host)) = (
            self.tls.as_ref().and_then(|t| t.sni.as_deref()),
            request_host(parts),
        ) {
            if !host.eq_ignore_ascii_case(sni) {
                return PolicyRefusal::of(Decision::Refuse {
                    rule: RULE_SNI_HOST.into(),
                    reason: format!(
                        "the request names host {host:?}, but its TLS was terminated for {sni:?}"
                    ),
                });
            }
        }
        let name = ex.server_name.as_deref();
        match self
            .proxy
            .vouch(policy, &self.agent, self.dst(), name)
            .await
        {
            Ok(()) => None,
            Err(unbound) => PolicyRefusal::of(Decision::Refuse {
                rule: RULE_NAME_UNBOUND.into(),
                reason: unbound.to_string(),
            }),
        }
    }

    /// The name the agent used: the SNI it sent, else the HTTP authority
    /// (without port, lower case).
    pub(super) fn server_name(&self, parts: &Parts) -> Option<String> {
        if let Some(sni) = self.tls.as_ref().and_then(|t| t.sni.as_deref()) {
            return Some(sni.to_owned());
        }
        request_host(parts)
    }
}

/// The request's host: its authority, else its Host header (without port,
/// lower case).
fn request_host(parts: &Parts) -> Option<String> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            let host = parts.headers.get(header::HOST)?.to_str().ok()?;
            let auth: hyper::http::uri::Authority = host.parse().ok()?;
            Some(auth.host().to_owned())
        })?;
    let host = authority.trim_start_matches('[').trim_end_matches(']');
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn hop_by_hop_fields_are_stripped() {
        let mut h = headers(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-type"]);

        // Fields the Connection header names go too; `te: trailers` stays.
        let mut h = headers(&[
            ("connection", "close, x-trace"),
            ("x-trace", "1"),
            ("x-kept", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["te", "x-kept"]);

        let mut h = headers(&[("te", "gzip"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }
}
