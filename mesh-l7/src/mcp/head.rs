//! The MCP facts of a request head, and the check of the 2026 mirrored
//! headers against the body.
use std::borrow::Cow;

use base64::Engine as _;
use http::{request::Parts, HeaderMap, Method};

use super::{
    generation::is_handshake_version,
    name_member,
    params::{string_member, Params},
    McpGeneration, METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, SESSION_HEADER,
};
use crate::L7Error;

/// One routing header as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Hdr<'h> {
    Absent,
    One(&'h str),
    /// Sent more than once (first-copy and last-copy readers would
    /// disagree), or not visible ASCII. Holds what was sent, for the error.
    Invalid(String),
}

impl<'h> Hdr<'h> {
    fn read(headers: &'h HeaderMap, name: &str) -> Self {
        let mut all = headers.get_all(name).iter();
        let Some(first) = all.next() else {
            return Hdr::Absent;
        };
        if all.next().is_some() {
            let joined: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            return Hdr::Invalid(joined.join(", "));
        }
        match first.to_str() {
            Ok(s) => Hdr::One(s),
            Err(_) => Hdr::Invalid(String::from_utf8_lossy(first.as_bytes()).into_owned()),
        }
    }

    pub(super) fn is_absent(&self) -> bool {
        matches!(self, Hdr::Absent)
    }

    fn sent(&self) -> &str {
        match self {
            Hdr::Absent => "",
            Hdr::One(s) => s,
            Hdr::Invalid(s) => s,
        }
    }
}

/// The MCP facts of a request head, read once per request.
#[derive(Clone, Debug)]
pub struct McpHead<'h> {
    pub(super) protocol_version: Hdr<'h>,
    pub(super) method: Hdr<'h>,
    pub(super) name: Hdr<'h>,
    pub(super) session_header: Option<&'h str>,
    /// `session_id` of a 2024-11-05 `POST /messages/?session_id=…`.
    pub(super) query_session: Option<&'h str>,
}

impl<'h> McpHead<'h> {
    pub fn new(head: &'h Parts) -> Self {
        let h = &head.headers;
        McpHead {
            protocol_version: Hdr::read(h, PROTOCOL_VERSION_HEADER),
            method: Hdr::read(h, METHOD_HEADER),
            name: Hdr::read(h, NAME_HEADER),
            session_header: h.get(SESSION_HEADER).and_then(|v| v.to_str().ok()),
            query_session: if head.method == Method::POST {
                head.uri.query().and_then(query_session)
            } else {
                None
            },
        }
    }

    /// Whether the head says MCP: any MCP header, or a 2024 message POST.
    pub fn is_mcp(&self) -> bool {
        !self.protocol_version.is_absent()
            || !self.method.is_absent()
            || !self.name.is_absent()
            || self.session_header.is_some()
            || self.query_session.is_some()
    }

    /// `MCP-Protocol-Version`, when sent once.
    pub fn protocol_version(&self) -> Option<&'h str> {
        match self.protocol_version {
            Hdr::One(v) => Some(v),
            _ => None,
        }
    }

    /// The session the request belongs to: `Mcp-Session-Id`, else the 2024
    /// `session_id` query parameter.
    pub fn session(&self) -> Option<&'h str> {
        self.session_header.or(self.query_session)
    }

    /// The generation, from the head and the body's 2026 `_meta` version.
    ///
    /// Stateless when `MCP-Protocol-Version` is not one of the versions
    /// reached by the `initialize` handshake: the SDK server (mcp 2.3.0,
    /// `StreamableHTTPSessionManager`) routes every other value, unknown ones
    /// included, to its stateless path. Without that header, stateless when
    /// the body carries a 2026 `_meta` envelope (a stateless-era client that
    /// left out a required header). `Mcp-Method` alone does not make a
    /// request stateless: the TypeScript SDK sends it on every POST, its
    /// 2025 `initialize` (which has no version header) included. Then
    /// HTTP+SSE for a `POST ?session_id=`, else sessions.
    pub fn generation(&self, meta_version: Option<&str>) -> McpGeneration {
        let stateless = match &self.protocol_version {
            Hdr::One(v) => !is_handshake_version(v),
            Hdr::Invalid(_) => true,
            Hdr::Absent => meta_version.is_some_and(|v| !is_handshake_version(v)),
        };
        if stateless {
            McpGeneration::Stateless
        } else if self.query_session.is_some() {
            McpGeneration::HttpSse
        } else {
            McpGeneration::Sessions
        }
    }
}

/// The session of a 2024-11-05 message endpoint query: `session_id` (Python
/// SDK) or `sessionId` (TypeScript SDK). Not percent-decoded: the SDKs' ids
/// are hex or UUIDs.
pub(super) fn query_session(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("session_id=")
                .or_else(|| kv.strip_prefix("sessionId="))
        })
        .filter(|v| !v.is_empty())
}

/// Decodes a `=?base64?…?=` header value (2026-07-28 "Value Encoding");
/// other values are returned as they are. A malformed sentinel (bad or
/// non-canonical base64, not UTF-8) is `None`, which matches no body value,
/// as in the SDK's `decode_header_value`.
pub fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    const PREFIX: &str = "=?base64?";
    const SUFFIX: &str = "?=";
    if value.len() < PREFIX.len() + SUFFIX.len()
        || !value.starts_with(PREFIX)
        || !value.ends_with(SUFFIX)
    {
        return Some(Cow::Borrowed(value));
    }
    let payload = &value[PREFIX.len()..value.len() - SUFFIX.len()];
    // STANDARD requires canonical padding and no trailing bits.
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

fn mismatch(header: &'static str, sent: &str, body: &str) -> L7Error {
    L7Error::HeaderMismatch {
        header,
        header_value: sent.to_owned(),
        body_value: body.to_owned(),
    }
}

/// Checks the mirrored headers against the body (2026-07-28
/// basic/transports/streamable-http, "Server Validation": a required
/// standard header (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) that is
/// missing, a value that does not match the body after Base64 decoding, or a
/// value with invalid characters is a `HeaderMismatch`; its note asks
/// intermediaries to return 400 for these). The order is the SDK's
/// (`classify_inbound_request`): version, method, name.
///
/// Headers are required only on stateless *requests*: the spec leaves
/// header requirements for notification POSTs undefined, and earlier
/// generations define none. Headers that are sent are checked in every
/// generation: a value that disagrees with the body is never legitimate and
/// is exactly the confused-deputy case the check exists for. `Mcp-Name` is
/// compared only when the body has the member (as the SDK does).
pub(super) fn validate_headers(
    head: &McpHead<'_>,
    required: bool,
    method: &str,
    params: &Params<'_>,
    meta_version: Option<&str>,
) -> Result<(), L7Error> {
    match (&head.protocol_version, meta_version) {
        (Hdr::One(h), Some(b)) if *h != b => return Err(mismatch("MCP-Protocol-Version", h, b)),
        (Hdr::Invalid(h), b) => return Err(mismatch("MCP-Protocol-Version", h, b.unwrap_or(""))),
        (Hdr::Absent, b) if required => {
            return Err(mismatch("MCP-Protocol-Version", "", b.unwrap_or("")))
        }
        _ => {}
    }
    match &head.method {
        Hdr::One(h) if *h == method => {}
        Hdr::Absent if !required => {}
        other => return Err(mismatch("Mcp-Method", other.sent(), method)),
    }
    if let Some(key) = name_member(method) {
        let body = string_member(&format!("params.{key}"), params.member(key))?;
        if let Some(body) = body {
            match &head.name {
                Hdr::One(h) if decode_header_value(h).as_deref() == Some(&*body) => {}
                Hdr::Absent if !required => {}
                other => return Err(mismatch("Mcp-Name", other.sent(), &body)),
            }
        }
    }
    Ok(())
}
