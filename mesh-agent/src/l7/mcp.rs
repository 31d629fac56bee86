//! MCP over HTTP, in the three generations the official SDK speaks.
use serde::Serialize;

/// JSON-RPC error code for MCP headers that disagree with the body
/// (2026-07-28).
pub const HEADER_MISMATCH_CODE: i64 = -32020;

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

/// MCP specifics of a [`super::Call`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McpDetails {
    pub generation: McpGeneration,
}
