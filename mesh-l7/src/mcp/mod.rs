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
//! [`Call`](crate::Call), and check the 2026 mirrored headers against the
//! body, as the spec asks of intermediaries that act on either.
//!
//! - `generation`: the three generations and their protocol versions.
//! - `head`: the MCP headers of a request ([`McpHead`]) and their check
//!   against the body; `params`: the `params` members read from the body.
//! - `call`: the [`Call`](crate::Call) of a client's request
//!   ([`request_call`]) or of a bodiless one ([`bodiless_call`]).
//! - `observed`: calls read from messages the proxy only observes: on
//!   response streams ([`call_from_message`]), embedded in a 2026
//!   `input_required` result ([`input_requests`]), the 2024 endpoint event
//!   ([`endpoint_session`]).
use serde::Serialize;

mod call;
mod generation;
mod head;
mod observed;
mod params;

#[cfg(test)]
mod tests;

pub use call::{bodiless_call, request_call};
pub use generation::{
    McpGeneration, HANDSHAKE_VERSIONS, HTTP_SSE_VERSION, SESSIONS_DEFAULT_VERSION,
    STATELESS_VERSION,
};
pub use head::{decode_header_value, McpHead};
pub use observed::{call_from_message, endpoint_session, input_requests};

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

/// What a [`Call`](crate::Call)'s `name` is read from: the `Mcp-Name` member, and the URI
/// of resource subscriptions.
fn call_name_member(method: &str) -> Option<&'static str> {
    match method {
        "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        m => name_member(m),
    }
}
