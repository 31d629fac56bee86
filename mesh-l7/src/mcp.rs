//! MCP over HTTP, in the three generations the official SDK speaks.
//!
//! - **2026-07-28, stateless**: every POST carries `MCP-Protocol-Version`,
//!   `Mcp-Method` and (tools/call, resources/read, prompts/get) `Mcp-Name`,
//!   mirrored from the body. Server→client requests come back embedded in an
//!   `input_required` result; the client retries with `inputResponses`.
//! - **2025-03-26 … 2025-11-25, sessions**: `Mcp-Session-Id`; server→client
//!   requests arrive on SSE response streams and are answered by separate
//!   client POSTs.
//! - **2024-11-05, HTTP+SSE**: `GET /sse` announces `/messages/?session_id=…`,
//!   every client message is a POST there.
//!
//! The parsers here turn a request head and one JSON-RPC message into a
//! [`Call`], and check the 2026 mirrored headers against the body, as the
//! spec asks of intermediaries that act on either.
use std::borrow::Cow;

use base64::Engine as _;
use http::{request::Parts, HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    jsonrpc::{first_byte, from_raw, Message, Str},
    Arguments, Call, Direction, L7Error, Protocol,
};

/// JSON-RPC error code for MCP headers that disagree with the body, or
/// required ones that are missing or malformed: `HeaderMismatch`, 2026-07-28
/// basic/transports/streamable-http "Server Validation" (also the SDK's
/// `mcp_types.jsonrpc.HEADER_MISMATCH`), sent with HTTP 400.
pub const HEADER_MISMATCH_CODE: i64 = -32020;

/// Header names (lowercase, as `http` stores them).
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The first protocol version without sessions; header/body validation is
/// required from this version on.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// What a Streamable HTTP request without `MCP-Protocol-Version` is assumed
/// to speak (2025-06-18 and later spec: "assume 2025-03-26").
pub const SESSIONS_DEFAULT_VERSION: &str = "2025-03-26";
/// The HTTP+SSE transport's protocol version.
pub const HTTP_SSE_VERSION: &str = "2024-11-05";

/// `_meta` keys of the 2026 per-request envelope.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// Synthetic method of a bodiless request that opens a server→client SSE
/// stream: the 2025 standalone `GET` on the MCP endpoint, or the 2024
/// `GET /sse`. Not an MCP method; lets policy and audit see the stream open.
pub const STREAM_METHOD: &str = "mcp/stream";
/// Synthetic method of `DELETE` with `Mcp-Session-Id` (2025: the client ends
/// its session). Not an MCP method.
pub const SESSION_DELETE_METHOD: &str = "mcp/session/delete";

/// Which MCP transport generation a request was made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum McpGeneration {
    /// 2026-07-28: stateless, `Mcp-Method`/`Mcp-Name` headers.
    Stateless,
    /// 2025-03-26 to 2025-11-25: Streamable HTTP with sessions.
    Sessions,
    /// 2024-11-05: HTTP+SSE (`/sse` and `/messages`).
    HttpSse,
}

impl McpGeneration {
    /// The protocol version assumed when nothing says otherwise.
    pub fn default_version(self) -> &'static str {
        match self {
            McpGeneration::Stateless => STATELESS_VERSION,
            McpGeneration::Sessions => SESSIONS_DEFAULT_VERSION,
            McpGeneration::HttpSse => HTTP_SSE_VERSION,
        }
    }
}

/// MCP specifics of a [`super::Call`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McpDetails {
    pub generation: McpGeneration,
    /// The protocol version the request is made under (for `initialize`, the
    /// version the client asks for). `None` when not known from the message
    /// alone ([`call_from_message`]).
    pub protocol_version: Option<String>,
    /// A 2026 retry carrying `inputResponses` or `requestState`: the answer
    /// to an earlier `input_required` result.
    pub input_responses: bool,
    /// `clientInfo.name` of `initialize`, or of the 2026 `_meta` envelope.
    pub client_name: Option<String>,
    /// `clientInfo.version`, from the same place.
    pub client_version: Option<String>,
    /// For a request embedded in a 2026 `input_required` result
    /// ([`input_requests`]): its key in `inputRequests`.
    pub input_key: Option<String>,
}

impl McpDetails {
    fn new(generation: McpGeneration, protocol_version: Option<String>) -> Self {
        McpDetails {
            generation,
            protocol_version,
            input_responses: false,
            client_name: None,
            client_version: None,
            input_key: None,
        }
    }
}

/// Methods a server may be asked over MCP, by either side (all
/// generations), so a JSON-RPC body without MCP headers is still recognised.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "server/discover",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// Whether `method` is an MCP method (`notifications/…` included).
pub fn is_method(method: &str) -> bool {
    method.starts_with("notifications/") || METHODS.contains(&method)
}

/// The params member mirrored into `Mcp-Name` (2026-07-28 "Standard Request
/// Headers": `params.name` or `params.uri` for tools/call, resources/read,
/// prompts/get).
pub fn name_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// What a [`Call`]'s `name` is read from: the `Mcp-Name` member, and the URI
/// of resource subscriptions.
fn call_name_member(method: &str) -> Option<&'static str> {
    match method {
        "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        m => name_member(m),
    }
}

/// One routing header as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hdr<'h> {
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

    fn is_absent(&self) -> bool {
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
    protocol_version: Hdr<'h>,
    method: Hdr<'h>,
    name: Hdr<'h>,
    session_header: Option<&'h str>,
    /// `session_id` of a 2024-11-05 `POST /messages/?session_id=…`.
    query_session: Option<&'h str>,
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

/// The versions negotiated by `initialize` (the SDK's
/// `HANDSHAKE_PROTOCOL_VERSIONS`); every later one is stateless.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

fn is_handshake_version(v: &str) -> bool {
    HANDSHAKE_VERSIONS.contains(&v)
}

/// The session of a 2024-11-05 message endpoint query: `session_id` (Python
/// SDK) or `sessionId` (TypeScript SDK). Not percent-decoded: the SDKs' ids
/// are hex or UUIDs.
fn query_session(query: &str) -> Option<&str> {
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

/// The `params` members the mesh reads; everything else is skipped.
#[derive(Deserialize, Default)]
struct Params<'a> {
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    uri: Option<&'a RawValue>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", default, borrow)]
    meta: Option<&'a RawValue>,
    #[serde(rename = "protocolVersion", default, borrow)]
    protocol_version: Option<&'a RawValue>,
    #[serde(rename = "clientInfo", default, borrow)]
    client_info: Option<&'a RawValue>,
    #[serde(rename = "inputResponses", default, borrow)]
    input_responses: Option<&'a RawValue>,
    #[serde(rename = "requestState", default, borrow)]
    request_state: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Params by name; positional params (an array) carry none of these.
    fn parse(params: Option<&'a RawValue>) -> Result<Self, L7Error> {
        match params {
            Some(raw) if first_byte(raw.get()) == Some(b'{') => from_raw("params", raw),
            _ => Ok(Params::default()),
        }
    }

    fn member(&self, key: &str) -> Option<&'a RawValue> {
        match key {
            "name" => self.name,
            "uri" => self.uri,
            _ => None,
        }
    }
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", default, borrow)]
    protocol_version: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/clientInfo", default, borrow)]
    client_info: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ClientInfo<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
    #[serde(default, borrow)]
    version: Option<Str<'a>>,
}

/// A member that must be a string when present.
fn string_member<'a>(
    what: &str,
    raw: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, L7Error> {
    match raw {
        None => Ok(None),
        Some(raw) => from_raw::<Str<'a>>(what, raw)
            .map(|s| Some(s.0))
            .map_err(|_| L7Error::InvalidRequest(format!("{what} must be a string"))),
    }
}

/// `clientInfo` name and version; a malformed one is ignored (it is only
/// reported, never decided on).
fn client_info(raw: Option<&RawValue>) -> (Option<String>, Option<String>) {
    raw.filter(|r| first_byte(r.get()) == Some(b'{'))
        .and_then(|r| serde_json::from_str::<ClientInfo<'_>>(r.get()).ok())
        .map(|c| {
            (
                c.name.map(|s| s.0.into_owned()),
                c.version.map(|s| s.0.into_owned()),
            )
        })
        .unwrap_or_default()
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
fn validate_headers(
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

/// The [`Call`] of a client request or notification POSTed to an MCP server.
///
/// Reads `params` once; builds `arguments` (tools/call, prompts/get) as a
/// `Value`. Errors: [`L7Error::HeaderMismatch`] (see [`validate_headers`]),
/// [`L7Error::InvalidRequest`] for a non-string `name`/`uri`/`_meta`
/// version, [`L7Error::Parse`] for arguments nested past the recursion limit.
pub fn request_call(head: &McpHead<'_>, msg: &Message<'_>) -> Result<Call, L7Error> {
    let (id, method, raw_params) = match msg {
        Message::Request { id, method, params } => (Some(id.clone()), method, *params),
        Message::Notification { method, params } => (None, method, *params),
        Message::Response { .. } => {
            return Err(L7Error::InvalidRequest("a response is not a call".into()))
        }
    };
    let method: &str = method;
    let params = Params::parse(raw_params)?;
    let meta: Meta<'_> = match params.meta {
        Some(raw) if first_byte(raw.get()) == Some(b'{') => from_raw("params._meta", raw)?,
        _ => Meta::default(),
    };
    let meta_version = string_member("params._meta protocolVersion", meta.protocol_version)?;
    let generation = head.generation(meta_version.as_deref());
    let required = generation == McpGeneration::Stateless && id.is_some();
    validate_headers(head, required, method, &params, meta_version.as_deref())?;

    let requested = if method == "initialize" {
        string_member("params.protocolVersion", params.protocol_version)?
    } else {
        None
    };
    let version: String = match generation {
        McpGeneration::Stateless => head
            .protocol_version()
            .or(meta_version.as_deref())
            .unwrap_or(STATELESS_VERSION)
            .to_owned(),
        McpGeneration::Sessions => requested
            .as_deref()
            .or(head.protocol_version())
            .unwrap_or(SESSIONS_DEFAULT_VERSION)
            .to_owned(),
        McpGeneration::HttpSse => requested.as_deref().unwrap_or(HTTP_SSE_VERSION).to_owned(),
    };
    let name = match call_name_member(method) {
        Some(key) => {
            string_member(&format!("params.{key}"), params.member(key))?.map(Cow::into_owned)
        }
        None => None,
    };
    let arguments = match (method, params.arguments) {
        ("tools/call" | "prompts/get", Some(raw)) => Arguments::from_raw("params.arguments", raw)?,
        _ => None,
    };
    let (client_name, client_version) = if method == "initialize" {
        client_info(params.client_info)
    } else {
        client_info(meta.client_info)
    };
    let session = match generation {
        // 2026-07-28 servers ignore Mcp-Session-Id: it correlates nothing.
        McpGeneration::Stateless => None,
        McpGeneration::Sessions => head.session_header,
        McpGeneration::HttpSse => head.query_session,
    };
    let mut details = McpDetails::new(generation, Some(version.clone()));
    details.input_responses = params.input_responses.is_some() || params.request_state.is_some();
    details.client_name = client_name;
    details.client_version = client_version;
    Ok(Call {
        protocol: Protocol::Mcp,
        direction: Direction::ClientToServer,
        method: method.to_owned(),
        name,
        arguments,
        id,
        session: session.map(str::to_owned),
        version: Some(version),
        mcp: Some(details),
        a2a: None,
        llm: None,
    })
}

/// The [`Call`] of a bodiless MCP request, if it is one:
/// - `GET` with `Accept: text/event-stream` and `Mcp-Session-Id` or
///   `MCP-Protocol-Version` (2025 standalone stream) → [`STREAM_METHOD`];
/// - `GET …/sse` with `Accept: text/event-stream` (2024 stream open, whose
///   `endpoint` event names the session) → [`STREAM_METHOD`], HTTP+SSE;
/// - `DELETE` with `Mcp-Session-Id` → [`SESSION_DELETE_METHOD`].
pub fn bodiless_call(head: &Parts, mcp: &McpHead<'_>) -> Option<Call> {
    let (method, generation) = if head.method == Method::GET && accepts_event_stream(&head.headers)
    {
        if mcp.session_header.is_some() || !mcp.protocol_version.is_absent() {
            (STREAM_METHOD, mcp.generation(None))
        } else if head.uri.path().ends_with("/sse") {
            (STREAM_METHOD, McpGeneration::HttpSse)
        } else {
            return None;
        }
    } else if head.method == Method::DELETE && mcp.session_header.is_some() {
        (SESSION_DELETE_METHOD, mcp.generation(None))
    } else {
        return None;
    };
    let version = match generation {
        McpGeneration::HttpSse => HTTP_SSE_VERSION,
        g => mcp.protocol_version().unwrap_or(g.default_version()),
    }
    .to_owned();
    Some(Call {
        protocol: Protocol::Mcp,
        direction: Direction::ClientToServer,
        method: method.to_owned(),
        name: None,
        arguments: None,
        id: None,
        session: mcp.session_header.map(str::to_owned),
        version: Some(version.clone()),
        mcp: Some(McpDetails::new(generation, Some(version))),
        a2a: None,
        llm: None,
    })
}

/// Whether any `Accept` header lists `text/event-stream`.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|m| {
                m.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            })
        })
    })
}

/// A request or notification seen on a response stream (or anywhere the
/// proxy has only the message) as a [`Call`]: server→client
/// `elicitation/create`, `sampling/createMessage`, `roots/list` on a 2025
/// SSE stream (direction [`Direction::ServerToClient`], ids in the server's
/// own id space), or 2024 messages on the `GET /sse` stream. `None` for
/// responses.
///
/// Lenient, since the message is observed rather than decided from headers:
/// members of the wrong type are left out. For server→client requests,
/// `arguments` is the whole `params` (the elicitation message and schema,
/// the sampling messages), which is what policy and audit look at.
/// `version` is left `None`: the caller knows it from the stream's request.
pub fn call_from_message(
    msg: &Message<'_>,
    direction: Direction,
    session: Option<&str>,
    generation: McpGeneration,
) -> Option<Call> {
    let (id, method, raw_params) = match msg {
        Message::Request { id, method, params } => (Some(id.clone()), method, *params),
        Message::Notification { method, params } => (None, method, *params),
        Message::Response { .. } => return None,
    };
    let mut call = message_call(method, raw_params, direction, generation);
    call.id = id;
    call.session = session.map(str::to_owned);
    Some(call)
}

fn message_call(
    method: &str,
    raw_params: Option<&RawValue>,
    direction: Direction,
    generation: McpGeneration,
) -> Call {
    let params = Params::parse(raw_params).unwrap_or_default();
    let name = call_name_member(method)
        .and_then(|key| string_member("name", params.member(key)).ok().flatten())
        .map(Cow::into_owned);
    let arguments = match direction {
        Direction::ServerToClient => {
            raw_params.and_then(|p| Arguments::from_raw("params", p).ok().flatten())
        }
        Direction::ClientToServer => match method {
            "tools/call" | "prompts/get" => params
                .arguments
                .and_then(|p| Arguments::from_raw("arguments", p).ok().flatten()),
            _ => None,
        },
    };
    let mut details = McpDetails::new(generation, None);
    details.input_responses = params.input_responses.is_some() || params.request_state.is_some();
    Call {
        protocol: Protocol::Mcp,
        direction,
        method: method.to_owned(),
        name,
        arguments,
        id: None,
        session: None,
        version: None,
        mcp: Some(details),
        a2a: None,
        llm: None,
    }
}

/// The server→client requests embedded in a 2026 `input_required` result
/// (`result.inputRequests`: key → `{method, params}`), as
/// [`Direction::ServerToClient`] calls with no id and the key in
/// [`McpDetails::input_key`], in key order. They are what 2025 servers sent
/// as separate requests; policy sees them the same way. Entries without a
/// string `method` are skipped.
pub fn input_requests(result: &RawValue, generation: McpGeneration) -> Result<Vec<Call>, L7Error> {
    #[derive(Deserialize)]
    struct InputRequired<'a> {
        #[serde(rename = "inputRequests", default, borrow)]
        input_requests: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct InputRequest<'a> {
        #[serde(default, borrow)]
        method: Option<&'a RawValue>,
        #[serde(default, borrow)]
        params: Option<&'a RawValue>,
    }
    if first_byte(result.get()) != Some(b'{') {
        return Ok(Vec::new());
    }
    let outer: InputRequired<'_> = from_raw("result", result)?;
    let Some(requests) = outer
        .input_requests
        .filter(|r| first_byte(r.get()) == Some(b'{'))
    else {
        return Ok(Vec::new());
    };
    let map: std::collections::BTreeMap<String, &RawValue> =
        from_raw("result.inputRequests", requests)?;
    let mut calls = Vec::with_capacity(map.len());
    for (key, raw) in map {
        let Ok(req) = from_raw::<InputRequest<'_>>("inputRequests entry", raw) else {
            continue;
        };
        let Some(Some(method)) = req
            .method
            .map(|m| string_member("method", Some(m)).ok().flatten())
        else {
            continue;
        };
        let mut call = message_call(&method, req.params, Direction::ServerToClient, generation);
        if let Some(d) = call.mcp.as_mut() {
            d.input_key = Some(key);
        }
        calls.push(call);
    }
    Ok(calls)
}

/// The session id in a 2024-11-05 `event: endpoint` data line
/// (`/messages/?session_id=…`, possibly an absolute URL).
pub fn endpoint_session(data: &str) -> Option<String> {
    let data = data.trim();
    let query = data.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query_session(query).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{jsonrpc::parse_message, RpcId};
    use serde_json::json;

    fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn call(parts: &Parts, body: &str) -> Result<Call, L7Error> {
        let msg = parse_message(body.as_bytes())?;
        request_call(&McpHead::new(parts), &msg)
    }

    const ADD_2026: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"2.3.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;

    fn h2026(name: &str) -> Parts {
        head(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", name),
            ],
        )
    }

    #[test]
    fn stateless_tools_call() {
        let c = call(&h2026("add"), ADD_2026).unwrap();
        assert_eq!(c.protocol, Protocol::Mcp);
        assert_eq!(c.method, "tools/call");
        assert_eq!(c.name.as_deref(), Some("add"));
        assert_eq!(
            c.arguments.map(|a| a.to_value()),
            Some(json!({"a": 2, "b": 3}))
        );
        assert_eq!(c.id, Some(RpcId::Number(3)));
        assert_eq!(c.session, None);
        assert_eq!(c.version.as_deref(), Some("2026-07-28"));
        let d = c.mcp.unwrap();
        assert_eq!(d.generation, McpGeneration::Stateless);
        assert_eq!(d.client_name.as_deref(), Some("mcp"));
        assert_eq!(d.client_version.as_deref(), Some("2.3.0"));
        assert!(!d.input_responses);
    }

    #[test]
    fn stateless_mismatches() {
        let e = call(&h2026("sub"), ADD_2026).unwrap_err();
        assert_eq!(
            e,
            L7Error::HeaderMismatch {
                header: "Mcp-Name",
                header_value: "sub".into(),
                body_value: "add".into()
            }
        );
        assert_eq!((e.http_status(), e.jsonrpc_code()), (400, -32020));

        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-name", "add"),
            ],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "Mcp-Method",
                ..
            })
        ));

        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2026-08-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "MCP-Protocol-Version",
                ..
            })
        ));
    }

    #[test]
    fn stateless_required_headers() {
        // Mcp-Name missing on tools/call.
        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "Mcp-Name",
                ..
            })
        ));
        // Mcp-Method missing.
        let p = head(
            "POST",
            "/mcp",
            &[("mcp-protocol-version", "2026-07-28"), ("mcp-name", "add")],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "Mcp-Method",
                ..
            })
        ));
        // Version header missing, but the body is a 2026 envelope.
        let p = head(
            "POST",
            "/mcp",
            &[("mcp-method", "tools/call"), ("mcp-name", "add")],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "MCP-Protocol-Version",
                ..
            })
        ));
        let p = head("POST", "/mcp", &[]);
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "MCP-Protocol-Version",
                ..
            })
        ));
        // Repeated header.
        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
        );
        assert!(matches!(
            call(&p, ADD_2026),
            Err(L7Error::HeaderMismatch {
                header: "Mcp-Method",
                ..
            })
        ));
    }

    #[test]
    fn stateless_base64_name() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"grüß","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("grüß")
        );
        let c = call(&h2026(&encoded), body).unwrap();
        assert_eq!(c.name.as_deref(), Some("grüß"));
        assert_eq!(c.arguments.map(|a| a.to_value()), Some(json!({})));
        // Plain header against a non-ASCII body value, and a broken sentinel.
        assert!(call(&h2026("gr"), body).is_err());
        assert!(call(&h2026("=?base64?Z3L=?="), body).is_err());
        // A sentinel-looking literal must itself be encoded: sent raw it is decoded.
        assert_eq!(
            decode_header_value("=?base64?YWRk?=").as_deref(),
            Some("add")
        );
        assert_eq!(
            decode_header_value("=?base64?=").as_deref(),
            Some("=?base64?=")
        );
        assert_eq!(decode_header_value("=?base64??=").as_deref(), Some(""));
        assert_eq!(decode_header_value("=?base64?YWRkZ===?="), None);
        assert_eq!(
            decode_header_value("=?BASE64?YWRk?=").as_deref(),
            Some("=?BASE64?YWRk?=")
        );
    }

    #[test]
    fn stateless_resources_read_uri() {
        let body = r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///projects/myapp/config.json","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "resources/read"),
                ("mcp-name", "file:///projects/myapp/config.json"),
            ],
        );
        let c = call(&p, body).unwrap();
        assert_eq!(
            c.name.as_deref(),
            Some("file:///projects/myapp/config.json")
        );
        assert_eq!(c.arguments, None);
    }

    #[test]
    fn stateless_input_required_retry() {
        let body = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3},"inputResponses":{"github_login":{"action":"accept","content":{"name":"octocat"}}},"requestState":"AEAD","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let c = call(&h2026("add"), body).unwrap();
        assert!(c.mcp.unwrap().input_responses);

        let result = r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{"github_login":{"method":"elicitation/create","params":{"mode":"form","message":"Please provide your GitHub username","requestedSchema":{"type":"object"}}},"roots":{"method":"roots/list"}},"requestState":"AEAD"}}"#;
        let Message::Response { status, .. } = parse_message(result.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(status, crate::OutcomeStatus::InputRequired);
        let raw = crate::jsonrpc::result_raw(result.as_bytes()).unwrap();
        let calls = input_requests(raw, McpGeneration::Stateless).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, "elicitation/create");
        assert_eq!(calls[0].direction, Direction::ServerToClient);
        assert_eq!(
            calls[0].mcp.as_ref().unwrap().input_key.as_deref(),
            Some("github_login")
        );
        assert_eq!(
            calls[0].arguments.as_ref().unwrap().to_value()["message"],
            "Please provide your GitHub username"
        );
        assert_eq!(calls[1].method, "roots/list");
        assert_eq!(calls[1].arguments, None);
    }

    #[test]
    fn stateless_notification_needs_no_headers() {
        let p = head("POST", "/mcp", &[("mcp-protocol-version", "2026-07-28")]);
        let c = call(
            &p,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
        )
        .unwrap();
        assert_eq!(c.id, None);
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::Stateless);
    }

    #[test]
    fn sessions_initialize() {
        let p = head(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
        );
        let c = call(&p, r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"1.9.0"}}}"#).unwrap();
        assert_eq!(c.method, "initialize");
        assert_eq!(c.version.as_deref(), Some("2025-11-25"));
        assert_eq!(c.session, None);
        let d = c.mcp.unwrap();
        assert_eq!(d.generation, McpGeneration::Sessions);
        assert_eq!(d.client_name.as_deref(), Some("mcp"));
    }

    #[test]
    fn sessions_tools_call() {
        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-session-id", "4f1c"),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        );
        let c = call(&p, r#"{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#).unwrap();
        assert_eq!(c.session.as_deref(), Some("4f1c"));
        assert_eq!(c.version.as_deref(), Some("2025-06-18"));
        assert_eq!(c.id, Some(RpcId::String("7".into())));
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::Sessions);
        // No version header: 2025-03-26.
        let p = head("POST", "/mcp", &[("mcp-session-id", "4f1c")]);
        let c = call(&p, r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#).unwrap();
        assert_eq!(c.version.as_deref(), Some("2025-03-26"));
        assert_eq!(c.name, None);
        // A mirrored header sent in a sessions request is still checked.
        let p = head(
            "POST",
            "/mcp",
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/list"),
            ],
        );
        assert!(call(
            &p,
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"x"}}"#
        )
        .is_err());
        // A non-string tool name is refused.
        let p = head("POST", "/mcp", &[("mcp-session-id", "4f1c")]);
        assert!(matches!(
            call(
                &p,
                r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":5}}"#
            ),
            Err(L7Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn http_sse_message_post() {
        let p = head(
            "POST",
            "/messages/?session_id=0a1b2c",
            &[("content-type", "application/json")],
        );
        let c = call(&p, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}"#).unwrap();
        assert_eq!(c.session.as_deref(), Some("0a1b2c"));
        assert_eq!(c.version.as_deref(), Some("2024-11-05"));
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::HttpSse);
    }

    #[test]
    fn endpoint_sessions() {
        assert_eq!(
            endpoint_session("/messages/?session_id=9f8e7d").as_deref(),
            Some("9f8e7d")
        );
        assert_eq!(
            endpoint_session("http://127.0.0.1:8000/messages/?x=1&session_id=ab#f").as_deref(),
            Some("ab")
        );
        assert_eq!(
            endpoint_session("/messages?sessionId=5d2c-11").as_deref(),
            Some("5d2c-11")
        );
        assert_eq!(endpoint_session("/messages/"), None);
        assert_eq!(endpoint_session("/messages/?session_id="), None);
    }

    #[test]
    fn server_to_client_elicitation() {
        let m = parse_message(br#"{"jsonrpc":"2.0","id":0,"method":"elicitation/create","params":{"message":"Confirm?","requestedSchema":{"type":"object","properties":{"ok":{"type":"boolean"}}}}}"#).unwrap();
        let c = call_from_message(
            &m,
            Direction::ServerToClient,
            Some("4f1c"),
            McpGeneration::Sessions,
        )
        .unwrap();
        assert_eq!(c.direction, Direction::ServerToClient);
        assert_eq!(c.method, "elicitation/create");
        assert_eq!(c.id, Some(RpcId::Number(0)));
        assert_eq!(c.session.as_deref(), Some("4f1c"));
        assert_eq!(c.arguments.unwrap().to_value()["message"], "Confirm?");
        let n = parse_message(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5}}"#).unwrap();
        assert_eq!(
            call_from_message(&n, Direction::ServerToClient, None, McpGeneration::Sessions)
                .unwrap()
                .id,
            None
        );
        let r = parse_message(br#"{"jsonrpc":"2.0","id":0,"result":{}}"#).unwrap();
        assert!(
            call_from_message(&r, Direction::ServerToClient, None, McpGeneration::Sessions)
                .is_none()
        );
    }

    #[test]
    fn bodiless() {
        let p = head(
            "GET",
            "/mcp",
            &[
                ("accept", "text/event-stream"),
                ("mcp-session-id", "s1"),
                ("mcp-protocol-version", "2025-11-25"),
            ],
        );
        let c = bodiless_call(&p, &McpHead::new(&p)).unwrap();
        assert_eq!(
            (
                c.method.as_str(),
                c.session.as_deref(),
                c.version.as_deref()
            ),
            (STREAM_METHOD, Some("s1"), Some("2025-11-25"))
        );
        let p = head("GET", "/sse", &[("accept", "text/event-stream")]);
        let c = bodiless_call(&p, &McpHead::new(&p)).unwrap();
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::HttpSse);
        let p = head("DELETE", "/mcp", &[("mcp-session-id", "s1")]);
        assert_eq!(
            bodiless_call(&p, &McpHead::new(&p)).unwrap().method,
            SESSION_DELETE_METHOD
        );
        let p = head("GET", "/sse", &[("accept", "application/json")]);
        assert!(bodiless_call(&p, &McpHead::new(&p)).is_none());
        let p = head("GET", "/events", &[("accept", "text/event-stream")]);
        assert!(bodiless_call(&p, &McpHead::new(&p)).is_none());
    }

    #[test]
    fn generations() {
        assert!(is_handshake_version("2025-11-25"));
        assert!(!is_handshake_version("2026-07-28"));
        let p = head("POST", "/mcp", &[("mcp-protocol-version", "DRAFT-2026-v1")]);
        assert_eq!(McpHead::new(&p).generation(None), McpGeneration::Stateless);
        // The TypeScript SDK's 2025 initialize: Mcp-Method, no version header.
        let p = head("POST", "/mcp", &[("mcp-method", "initialize")]);
        assert_eq!(McpHead::new(&p).generation(None), McpGeneration::Sessions);
        let c = call(&p, r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#).unwrap();
        assert_eq!(c.version.as_deref(), Some("2025-11-25"));
        let p = head("POST", "/mcp", &[]);
        assert!(!McpHead::new(&p).is_mcp());
        assert_eq!(McpHead::new(&p).generation(None), McpGeneration::Sessions);
        assert_eq!(
            McpHead::new(&p).generation(Some("2026-07-28")),
            McpGeneration::Stateless
        );
    }

    #[test]
    fn deep_arguments_are_a_parse_error() {
        let depth = 100_000;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"add","arguments":{{"a":{}{}}}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let p = head("POST", "/mcp", &[("mcp-session-id", "s")]);
        assert!(matches!(call(&p, &body), Err(L7Error::Parse(_))));
    }
}
