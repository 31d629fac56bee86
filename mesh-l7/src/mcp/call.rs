//! The [`Call`] of a request a client sends to an MCP server: from the head
//! and one JSON-RPC message, or from the head alone when it has no body.
use std::borrow::Cow;

use http::{request::Parts, HeaderMap, Method};

use super::{
    call_name_member,
    head::{validate_headers, McpHead},
    params::{client_info, string_member, Meta, Params},
    McpDetails, McpGeneration, HTTP_SSE_VERSION, SESSIONS_DEFAULT_VERSION, SESSION_DELETE_METHOD,
    STATELESS_VERSION, STREAM_METHOD,
};
use crate::{
    jsonrpc::{first_byte, from_raw, Message},
    Arguments, Call, Direction, L7Error, Protocol,
};

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
