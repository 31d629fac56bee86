//! L7: what governed agents say. Pure parsers and state machines over bytes
//! and `http` heads, with no I/O: the proxy feeds them and acts on what they
//! return. Each parser has a fuzz target (`fuzz/`).
//!
//! - [`sse`]: incremental Server-Sent Events parser.
//! - [`jsonrpc`]: one JSON-RPC 2.0 message from bytes (request, notification,
//!   response), batches refused.
//! - [`mcp`] and [`a2a`]: HTTP request + JSON-RPC message into a [`Call`].
//! - [`llm`]: OpenAI and Anthropic request fields and usage, streaming included.
//! - [`request`]: the entry point the proxy calls for every HTTP request.
//! - [`path`]: request paths in the one form policy matches and servers route.
//! - [`list_filter`]: MCP list results without the items an agent may not use.
pub mod a2a;
pub mod jsonrpc;
pub mod list_filter;
pub mod llm;
pub mod mcp;
pub mod path;
pub mod request;
pub mod sse;

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// What kind of conversation a request belongs to. Also the `protocol` label
/// of `mesh_requests_total` and `mesh_request_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP: bytes relayed, never parsed.
    Tcp,
    /// TLS passed through by SNI: bytes relayed, never decrypted.
    Tls,
    /// HTTP that is none of the below.
    Http,
    Mcp,
    A2a,
    Llm,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
            Protocol::Mcp => "mcp",
            Protocol::A2a => "a2a",
            Protocol::Llm => "llm",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON-RPC id. `null` ids only occur on error responses to unparseable
/// requests; they are represented by the absence of an id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RpcId {
    Number(i64),
    String(String),
}

impl fmt::Display for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcId::Number(n) => write!(f, "{n}"),
            RpcId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A call's arguments as the raw JSON text the agent sent, validated (UTF-8,
/// syntax, nesting depth) but not turned into a tree: the hot path only
/// copies them into the record, and a rule that reads them parses them
/// ([`Arguments::to_value`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Arguments(Box<serde_json::value::RawValue>);

impl Arguments {
    /// Validates `raw` (as `serde_json::Value` would parse it, recursion
    /// limit included, without building it); `null` is absent.
    pub fn from_raw(
        what: &str,
        raw: &serde_json::value::RawValue,
    ) -> Result<Option<Arguments>, L7Error> {
        if raw.get() == "null" {
            return Ok(None);
        }
        if nesting_exceeds(raw.get(), MAX_JSON_NESTING) {
            return Err(L7Error::Parse(format!(
                "{what}: nested deeper than {MAX_JSON_NESTING} levels"
            )));
        }
        Ok(Some(Arguments(raw.to_owned())))
    }

    /// The JSON text, as sent.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The arguments as a tree, for rules that read them.
    pub fn to_value(&self) -> serde_json::Value {
        // Validated at construction: this cannot fail.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// The deepest nesting serde_json reads (its recursion limit refuses 128
/// levels): deeper arguments could never be read as a tree by a rule, so
/// they are refused up front.
const MAX_JSON_NESTING: usize = 127;

/// Whether syntactically valid JSON `text` nests arrays and objects deeper
/// than `limit`. One pass over the bytes; brackets inside strings do not
/// count.
fn nesting_exceeds(text: &str, limit: usize) -> bool {
    // Fewer opening brackets than the limit cannot nest past it: a count the
    // compiler vectorizes settles the usual case without the scan.
    let opening = text
        .as_bytes()
        .iter()
        .filter(|&&b| b == b'[' || b == b'{')
        .count();
    if opening <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl PartialEq for Arguments {
    fn eq(&self, other: &Arguments) -> bool {
        self.get() == other.get()
    }
}

/// Who sent the request. MCP servers send requests to clients too
/// (`elicitation/create`, `sampling/createMessage`, `roots/list`) with ids of
/// their own: ids are only unique per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The governed agent asks its peer (the usual case).
    ClientToServer,
    /// The peer asks the governed agent, on a response stream.
    ServerToClient,
}

/// One request an agent makes (or receives), as the decision point, audit and
/// metrics see it. Identity and the server's address are added by the proxy
/// (`mesh_policy::CallContext`); this is what the bytes say.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Call {
    pub protocol: Protocol,
    pub direction: Direction,
    /// JSON-RPC method (MCP, A2A), or the API for LLM calls
    /// (`chat.completions`, `responses`, `messages`).
    pub method: String,
    /// What the method acts on: the tool name (tools/call), the resource URI
    /// (resources/read), the prompt name (prompts/get), the model (LLM).
    pub name: Option<String>,
    /// tools/call and prompts/get `arguments`; A2A: the message `params`.
    pub arguments: Option<Arguments>,
    /// JSON-RPC id (absent for notifications and LLM calls).
    pub id: Option<RpcId>,
    /// MCP session (`Mcp-Session-Id`, or the 2024-11-05 `session_id`), or the
    /// A2A context id.
    pub session: Option<String>,
    /// MCP protocol version or A2A version the request is made under.
    pub version: Option<String>,
    pub mcp: Option<mcp::McpDetails>,
    pub a2a: Option<a2a::A2aDetails>,
    pub llm: Option<llm::LlmRequest>,
}

/// How a call ended, as the response said.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// A JSON-RPC result, or a 2xx LLM/HTTP response.
    Result,
    /// A JSON-RPC error object.
    Error { code: i64, message: String },
    /// A non-2xx HTTP status without a JSON-RPC error in the body.
    Http { status: u16 },
    /// MCP 2026-07-28: the server needs input first; the client retries.
    InputRequired,
    /// The response ended (stream closed, connection lost) before its end.
    Cut,
}

/// The typed result of one [`Call`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub status: OutcomeStatus,
    /// MCP tools/call `isError: true` (the tool failed; the call did not).
    pub is_error: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// From the request's head being read to the response's end.
    #[serde(with = "duration_micros")]
    pub latency: Duration,
    /// LLM token usage, when the response reports it (or as estimated so far).
    pub usage: Option<llm::Usage>,
}

mod duration_micros {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

/// Why a request could not be understood. Each maps to the HTTP status and
/// JSON-RPC error code the proxy answers with; the daemon never forwards what
/// it could not parse when the parse decides policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum L7Error {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(
        "JSON-RPC batches are not supported for MCP (removed in 2025-06-18) or A2A (never defined)"
    )]
    Batch,
    #[error("header {header} says {header_value:?} but the body says {body_value:?}")]
    HeaderMismatch {
        header: &'static str,
        header_value: String,
        body_value: String,
    },
    #[error("body larger than the {limit}-byte inspection limit")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Path(#[from] path::PathError),
}

impl L7Error {
    /// The message of the refusal, for the protocol the request is about
    /// when it is known.
    pub fn message_for(&self, protocol: Option<Protocol>) -> String {
        match (self, protocol) {
            (L7Error::Batch, Some(Protocol::Mcp)) => {
                "JSON-RPC batches are not supported by MCP (removed in 2025-06-18)".into()
            }
            (L7Error::Batch, Some(Protocol::A2a)) => {
                "JSON-RPC batches are not supported by A2A (it never defined them)".into()
            }
            _ => self.to_string(),
        }
    }

    /// The HTTP status the refusal is sent with.
    pub fn http_status(&self) -> u16 {
        match self {
            L7Error::TooLarge { .. } => 413,
            _ => 400,
        }
    }

    /// The JSON-RPC error code the refusal carries.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            L7Error::Parse(_) => -32700,
            L7Error::InvalidRequest(_)
            | L7Error::Batch
            | L7Error::TooLarge { .. }
            | L7Error::Path(_) => -32600,
            // MCP 2026-07-28: headers that disagree with the body.
            L7Error::HeaderMismatch { .. } => mcp::HEADER_MISMATCH_CODE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<serde_json::value::RawValue> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn arguments_keep_the_text_and_read_as_a_tree() {
        let a = Arguments::from_raw("a", &raw(r#"{"b": [1, "x]"]}"#))
            .unwrap()
            .unwrap();
        assert_eq!(a.get(), r#"{"b": [1, "x]"]}"#);
        assert_eq!(a.to_value(), serde_json::json!({"b": [1, "x]"]}));
        assert_eq!(Arguments::from_raw("a", &raw("null")).unwrap(), None);
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [126, 127, 128, 129] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let tree = serde_json::from_str::<serde_json::Value>(&text);
            let ours = Arguments::from_raw("a", &raw(&text));
            assert_eq!(ours.is_ok(), tree.is_ok(), "depth {depth}");
        }
        // Brackets inside strings (escaped quotes included) do not nest.
        let text = format!(r#"["{}\"{}"]"#, "[".repeat(200), "{".repeat(200));
        assert!(Arguments::from_raw("a", &raw(&text)).unwrap().is_some());
    }
}
