//! The three MCP transport generations and the protocol versions that
//! select them.
use serde::Serialize;

/// The first protocol version without sessions; header/body validation is
/// required from this version on.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// What a Streamable HTTP request without `MCP-Protocol-Version` is assumed
/// to speak (2025-06-18 and later spec: "assume 2025-03-26").
pub const SESSIONS_DEFAULT_VERSION: &str = "2025-03-26";
/// The HTTP+SSE transport's protocol version.
pub const HTTP_SSE_VERSION: &str = "2024-11-05";

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

/// The versions negotiated by `initialize` (the SDK's
/// `HANDSHAKE_PROTOCOL_VERSIONS`); every later one is stateless.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

pub(super) fn is_handshake_version(v: &str) -> bool {
    HANDSHAKE_VERSIONS.contains(&v)
}
