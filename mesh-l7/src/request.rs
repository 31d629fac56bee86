//! The entry point the proxy calls for every HTTP request.
//!
//! [`wants_body`] says from the head alone whether the body must be buffered
//! (up to the inspection limit) before deciding; [`classify`] then says what
//! the request is: an LLM API call, an MCP or A2A call, a client's reply to a
//! server→client MCP request, or plain HTTP.
//!
//! The body is parsed once. Requests whose head says MCP or A2A are held to
//! it: a body that does not parse is refused. Requests without such signs
//! are held to what their body claims: a broken JSON-RPC body naming an MCP
//! or A2A method is refused, any other JSON that is not JSON-RPC (a REST
//! API's payload, Bitcoin's `"jsonrpc":"1.0"`) is plain HTTP, so that
//! non-agent APIs keep working.
use http::{header::CONTENT_TYPE, request::Parts, Method};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    a2a,
    jsonrpc::{self, present, Message},
    llm::{self, LlmRequest},
    mcp::{self, McpHead},
    Call, Direction, L7Error, OutcomeStatus, Protocol, RpcId,
};

/// What a request is, as far as the mesh is concerned.
// One per request, matched and moved at once: boxing the Call would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Classified {
    /// A request (or notification: id `None`) the decision point sees.
    Call(Call),
    /// A JSON-RPC response the CLIENT sent (MCP 2025: its answer to a
    /// server→client request, POSTed separately; 2024: likewise to
    /// /messages). Matched by the proxy to the earlier ServerToClient call by
    /// (session, id).
    Reply {
        id: Option<RpcId>,
        session: Option<String>,
        status: OutcomeStatus,
    },
    /// Plain HTTP: not JSON-RPC, not an LLM API.
    Plain,
}

/// Whether the proxy must buffer this request's body (up to its limit)
/// before deciding: a POST, PUT or PATCH with a JSON content type (or none
/// at all: lenient servers take JSON without one, and such bodies are rare),
/// with an MCP or A2A header or a 2024 `?session_id=` query, or to an LLM API
/// path.
pub fn wants_body(head: &Parts) -> bool {
    if !matches!(head.method, Method::POST | Method::PUT | Method::PATCH) {
        return false;
    }
    match content_type(head) {
        None => return true,
        Some(ct) if is_json_media(ct) => return true,
        Some(_) => {}
    }
    head.headers.contains_key(a2a::VERSION_HEADER)
        || McpHead::new(head).is_mcp()
        || llm::classify(&head.method, head.uri.path(), b"").is_some()
}

/// Whether a body that starts with `head` is JSON, as far as its first
/// meaningful byte tells: an object or array (after a UTF-8 BOM and
/// whitespace), or UTF-16/32 text (NUL bytes, which UTF-8 JSON never has).
/// None while `head` is only whitespace (or a BOM prefix): read more.
pub fn starts_like_json(head: &[u8]) -> Option<bool> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if memchr::memchr(0, head).is_some() {
        return Some(true);
    }
    if head.len() < BOM.len() && BOM.starts_with(head) {
        return None;
    }
    let body = head.strip_prefix(BOM).unwrap_or(head);
    body.iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .map(|first| matches!(first, b'{' | b'['))
}

/// Says what a request is. Order: bodiless MCP/A2A requests (agent card,
/// stream open, session delete); LLM API paths whose body is an LLM request,
/// whatever the headers say (MCP or A2A headers on a body that is not one
/// go on: the 2024 TypeScript SDK posts MCP messages to `/messages`, which
/// looks like Anthropic's API); then a JSON-RPC body, as A2A or MCP; anything
/// else is [`Classified::Plain`].
///
/// Errors are refusals: the proxy answers with the error's HTTP status and
/// JSON-RPC code and does not forward the request.
pub fn classify(head: &Parts, body: &[u8]) -> Result<Classified, L7Error> {
    let mcp_head = McpHead::new(head);
    let a2a_sign = head.headers.contains_key(a2a::VERSION_HEADER);
    let signs = a2a_sign || mcp_head.is_mcp();

    if let Some(call) = a2a::agent_card_call(head) {
        return Ok(Classified::Call(call));
    }
    if let Some(call) = mcp::bodiless_call(head, &mcp_head) {
        return Ok(Classified::Call(call));
    }
    if let Some(req) = llm::classify(&head.method, head.uri.path(), body) {
        match req {
            Err(e) if !signs => return Err(e),
            // MCP or A2A headers on an LLM API path whose body is not an LLM
            // request: the MCP/A2A message below (the 2024 TypeScript SDK
            // posts to `/messages`).
            Err(_) => {}
            // An LLM request is one whatever headers claim; a body that is
            // also a JSON-RPC message could be served as either.
            Ok(r) if signs && jsonrpc::parse_message(body).is_ok() => {
                return Err(L7Error::InvalidRequest(format!(
                    "the body is both a JSON-RPC message and a {} request for model {:?}",
                    r.api, r.model
                )))
            }
            Ok(r) => return Ok(Classified::Call(llm_call(r))),
        }
    }

    // Python's json accepts a UTF-8 BOM; read what the server will read.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Some(first) = body
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    else {
        return Ok(Classified::Plain);
    };
    let json_type = content_type(head).is_some_and(is_json_media);
    if !matches!(first, b'{' | b'[') {
        // Not a JSON object or array. UTF-16/32 JSON (which Python also
        // accepts) has NUL bytes; UTF-8 JSON never does.
        let nul = memchr::memchr(0, body).is_some();
        if (signs && json_type) || (nul && (signs || json_type)) {
            return Err(match jsonrpc::parse_message(body) {
                Err(e) => e,
                Ok(_) => L7Error::Parse("body is not JSON".into()),
            });
        }
        return Ok(Classified::Plain);
    }

    let msg = match jsonrpc::parse_message(body) {
        Ok(msg) => msg,
        Err(e) if signs || claims_agent_rpc(body, &e) => return Err(e),
        Err(_) => return Ok(Classified::Plain),
    };
    let method = match &msg {
        Message::Response { id, status, .. } => {
            return Ok(Classified::Reply {
                id: id.clone(),
                session: mcp_head.session().map(str::to_owned),
                status: status.clone(),
            })
        }
        Message::Request { method, .. } | Message::Notification { method, .. } => &**method,
    };
    let protocol = if mcp_head.is_mcp() {
        if a2a_sign && a2a::is_method(method) && !mcp::is_method(method) {
            Protocol::A2a
        } else {
            Protocol::Mcp
        }
    } else if a2a_sign || a2a::is_method(method) {
        // Without MCP headers, `tasks/get` and `tasks/cancel` are A2A v0.3:
        // MCP tasks (2025-11-25) always come with MCP-Protocol-Version.
        Protocol::A2a
    } else if mcp::is_method(method) {
        Protocol::Mcp
    } else {
        // JSON-RPC to neither (Ethereum, a custom API): plain HTTP.
        return Ok(Classified::Plain);
    };
    match protocol {
        Protocol::A2a => a2a::request_call(a2a::version_header(head), &msg).map(Classified::Call),
        _ => mcp::request_call(&mcp_head, &msg).map(Classified::Call),
    }
}

/// What a refused request says of itself, read as far as it can be: the
/// JSON-RPC id to answer with and the protocol it is about. A refusal then
/// takes the shape that protocol's own servers give: the id echoed when it
/// can be read (JSON-RPC 2.0 §5), and for A2A, HTTP 200 (as a2a-sdk answers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    pub id: Option<RpcId>,
    /// MCP or A2A, when the headers or the body's method say so.
    pub protocol: Option<Protocol>,
}

/// Reads [`Envelope`] from a request that failed classification. Only a
/// body that is valid JSON has an id to read; a batch answers for its
/// protocol but has no single id.
pub fn probe_envelope(head: &Parts, body: &[u8]) -> Envelope {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        id: Option<RpcId>,
        #[serde(default, borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    let mcp_head = McpHead::new(head);
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let (id, method) = match &value {
        Some(v @ serde_json::Value::Object(_)) => match Probe::deserialize(v) {
            Ok(p) => (p.id, p.method.map(|m| m.into_owned())),
            Err(_) => (None, None),
        },
        Some(serde_json::Value::Array(items)) => {
            let method = items
                .iter()
                .find_map(|i| i.get("method").and_then(|m| m.as_str()).map(str::to_owned));
            (None, method)
        }
        _ => (None, None),
    };
    let protocol = if head.headers.contains_key(a2a::VERSION_HEADER)
        || method
            .as_deref()
            .is_some_and(|m| a2a::is_method(m) && !mcp::is_method(m))
    {
        Some(Protocol::A2a)
    } else if mcp_head.is_mcp() || method.as_deref().is_some_and(mcp::is_method) {
        Some(Protocol::Mcp)
    } else {
        None
    };
    Envelope { id, protocol }
}

/// The [`Call`] of an LLM API request: method from the API, name the model.
fn llm_call(req: LlmRequest) -> Call {
    Call {
        protocol: Protocol::Llm,
        direction: Direction::ClientToServer,
        method: req.api.method().to_owned(),
        name: Some(req.model.clone()),
        arguments: None,
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: Some(req),
    }
}

fn content_type(head: &Parts) -> Option<&str> {
    head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// `application/json`, `…/…+json`, `application/json-rpc`, `text/json`.
fn is_json_media(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    let suffix_json = sub.len() > 5
        && sub.is_char_boundary(sub.len() - 5)
        && sub[sub.len() - 5..].eq_ignore_ascii_case("+json");
    (ty.eq_ignore_ascii_case("application") || ty.eq_ignore_ascii_case("text"))
        && (sub.eq_ignore_ascii_case("json") || sub.eq_ignore_ascii_case("json-rpc") || suffix_json)
}

/// Whether a body without MCP/A2A headers that failed to parse as one
/// JSON-RPC message is still an agent call that must be refused rather than
/// passed as plain HTTP:
/// - broken JSON: it mentions `"jsonrpc"`, or has NUL bytes (UTF-16/32);
/// - valid JSON (a batch, a bad envelope): an object, or a batch element,
///   whose `method` is an MCP or A2A method.
fn claims_agent_rpc(body: &[u8], e: &L7Error) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow, deserialize_with = "present")]
        method: Option<&'a RawValue>,
    }
    fn agent_method(raw: &RawValue) -> bool {
        let Ok(p) = serde_json::from_str::<Probe<'_>>(raw.get()) else {
            // A duplicated `method`: the envelope error stands.
            return true;
        };
        p.method
            .and_then(|m| serde_json::from_str::<String>(m.get()).ok())
            .is_some_and(|m| mcp::is_method(&m) || a2a::is_method(&m))
    }
    if let L7Error::Parse(_) = e {
        return memchr::memchr(0, body).is_some()
            || memchr::memmem::find(body, b"\"jsonrpc\"").is_some();
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return true;
    };
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else {
        return true;
    };
    match jsonrpc::first_byte(raw.get()) {
        Some(b'{') => agent_method(raw),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(raw.get()).map_or(true, |items| {
            items
                .iter()
                .any(|i| jsonrpc::first_byte(i.get()) == Some(b'{') && agent_method(i))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mcp::McpGeneration;
    use serde_json::json;

    fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn a_body_says_whether_it_is_json_from_its_first_meaningful_byte() {
        assert_eq!(starts_like_json(b""), None);
        assert_eq!(starts_like_json(b" \r\n\t"), None);
        assert_eq!(starts_like_json(b"\xEF\xBB"), None);
        assert_eq!(starts_like_json(b"  {\"jsonrpc\""), Some(true));
        assert_eq!(starts_like_json(b"\xEF\xBB\xBF["), Some(true));
        assert_eq!(starts_like_json(b"{\x00\"\x00"), Some(true));
        assert_eq!(starts_like_json(b"\xFF\xFE{\x00"), Some(true));
        assert_eq!(starts_like_json(b"name=value"), Some(false));
        assert_eq!(starts_like_json(b"\n<xml/>"), Some(false));
    }
    #[test]
    fn a_refused_body_still_tells_its_id_and_protocol() {
        let plain = head("POST", "/rpc", &[JSON]);
        let e = probe_envelope(
            &plain,
            br#"{"jsonrpc":"1.0","id":"a-7","method":"tools/call"}"#,
        );
        assert_eq!(e.id, Some(RpcId::String("a-7".into())));
        assert_eq!(e.protocol, Some(Protocol::Mcp));
        let e = probe_envelope(
            &plain,
            br#"{"jsonrpc":"2.0","id":3,"method":"message/send","params":7}"#,
        );
        assert_eq!(
            (e.id, e.protocol),
            (Some(RpcId::Number(3)), Some(Protocol::A2a))
        );
        let a2a = head("POST", "/a2a", &[JSON, ("a2a-version", "1.0")]);
        let e = probe_envelope(&a2a, br#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#);
        assert_eq!((e.id, e.protocol), (None, Some(Protocol::A2a)));
        // Broken JSON has no readable id.
        let e = probe_envelope(&plain, br#"{"jsonrpc":"2.0","id":5,"method":"tools/call""#);
        assert_eq!((e.id, e.protocol), (None, None));
        // An id of the wrong type is not echoed.
        let e = probe_envelope(&plain, br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#);
        assert_eq!(e.id, None);
    }

    #[test]
    fn what_the_body_is_decides_not_what_the_headers_claim() {
        // A JSON-RPC call sent as text/plain (the proxy reads such a body
        // whole once it starts like JSON) is MCP.
        let tools_call =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}"#;
        let plain = head("POST", "/mcp", &[("content-type", "text/plain")]);
        let c = call(classify(&plain, tools_call));
        assert_eq!((c.protocol, c.name.as_deref()), (Protocol::Mcp, Some("rm")));

        // MCP headers on an LLM request do not make it MCP: it is an LLM
        // call, with its model and budget checks.
        let mcp_headers = [JSON, ("mcp-protocol-version", "2025-06-18")];
        let chat = head("POST", "/v1/chat/completions", &mcp_headers);
        let c = call(classify(&chat, br#"{"model":"gpt-big","messages":[]}"#));
        assert_eq!(
            (c.protocol, c.name.as_deref()),
            (Protocol::Llm, Some("gpt-big"))
        );

        // A body that is both could be served as either: refused.
        let both = br#"{"jsonrpc":"2.0","id":1,"method":"ping","model":"gpt-big","messages":[]}"#;
        assert!(matches!(
            classify(&chat, both),
            Err(L7Error::InvalidRequest(m)) if m.contains("both")
        ));

        // The 2024 TypeScript SDK's MCP POST to `/messages` stays MCP.
        let legacy = head("POST", "/messages?sessionId=s", &mcp_headers);
        let c = call(classify(
            &legacy,
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        ));
        assert_eq!(c.protocol, Protocol::Mcp);
    }

    fn call(c: Result<Classified, L7Error>) -> Call {
        match c {
            Ok(Classified::Call(c)) => c,
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn wants_body_from_the_head() {
        assert!(wants_body(&head("POST", "/api", &[JSON])));
        assert!(wants_body(&head(
            "PUT",
            "/api",
            &[("content-type", "application/vnd.api+json; charset=utf-8")]
        )));
        assert!(wants_body(&head("POST", "/api", &[])));
        assert!(wants_body(&head(
            "POST",
            "/mcp",
            &[("content-type", "text/plain"), ("mcp-session-id", "s")]
        )));
        assert!(wants_body(&head(
            "POST",
            "/messages/?session_id=ab",
            &[("content-type", "text/plain")]
        )));
        assert!(wants_body(&head(
            "POST",
            "/a2a",
            &[("content-type", "text/plain"), ("a2a-version", "1.0")]
        )));
        assert!(wants_body(&head(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "text/plain")]
        )));
        assert!(!wants_body(&head(
            "POST",
            "/upload",
            &[("content-type", "multipart/form-data; boundary=x")]
        )));
        assert!(!wants_body(&head(
            "GET",
            "/mcp",
            &[JSON, ("mcp-session-id", "s")]
        )));
        assert!(!wants_body(&head(
            "DELETE",
            "/mcp",
            &[("mcp-session-id", "s")]
        )));
    }

    #[test]
    fn mcp_2026_tools_call() {
        let h = head(
            "POST",
            "/mcp",
            &[
                JSON,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
        );
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let c = call(classify(&h, body));
        assert_eq!(
            (c.protocol, c.method.as_str(), c.name.as_deref()),
            (Protocol::Mcp, "tools/call", Some("add"))
        );
        assert_eq!(
            c.arguments.map(|a| a.to_value()),
            Some(json!({"a":2,"b":3}))
        );
        let h = head(
            "POST",
            "/mcp",
            &[
                JSON,
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "rm"),
            ],
        );
        let e = classify(&h, body).unwrap_err();
        assert_eq!(
            (e.http_status(), e.jsonrpc_code()),
            (400, mcp::HEADER_MISMATCH_CODE)
        );
    }

    #[test]
    fn mcp_2025_session_flow() {
        // initialize: no headers at all.
        let h = head(
            "POST",
            "/mcp",
            &[JSON, ("accept", "application/json, text/event-stream")],
        );
        let c = call(classify(&h, br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#));
        assert_eq!(
            (c.protocol, c.version.as_deref()),
            (Protocol::Mcp, Some("2025-06-18"))
        );
        // A notification (answered 202).
        let h = head(
            "POST",
            "/mcp",
            &[
                JSON,
                ("mcp-session-id", "s1"),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        );
        let c = call(classify(
            &h,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ));
        assert_eq!((c.id, c.session.as_deref()), (None, Some("s1")));
        // tools/call with the session.
        let c = call(classify(&h, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#));
        assert_eq!(
            (c.name.as_deref(), c.session.as_deref()),
            (Some("add"), Some("s1"))
        );
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::Sessions);
        // The client's answer to the server's elicitation/create (id 0 of the
        // server's id space).
        let r = classify(
            &h,
            br#"{"jsonrpc":"2.0","id":0,"result":{"action":"accept","content":{"ok":true}}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Classified::Reply {
                id: Some(RpcId::Number(0)),
                session: Some("s1".into()),
                status: OutcomeStatus::Result
            }
        );
        // Standalone stream and session end.
        let g = head(
            "GET",
            "/mcp",
            &[("accept", "text/event-stream"), ("mcp-session-id", "s1")],
        );
        assert_eq!(call(classify(&g, b"")).method, mcp::STREAM_METHOD);
        let d = head("DELETE", "/mcp", &[("mcp-session-id", "s1")]);
        assert_eq!(call(classify(&d, b"")).method, mcp::SESSION_DELETE_METHOD);
    }

    #[test]
    fn mcp_2024_http_sse() {
        let g = head("GET", "/sse", &[("accept", "text/event-stream")]);
        let c = call(classify(&g, b""));
        assert_eq!(c.mcp.unwrap().generation, McpGeneration::HttpSse);
        let p = head("POST", "/messages/?session_id=9f8e", &[JSON]);
        let c = call(classify(&p, br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{}}}"#));
        assert_eq!(
            (c.session.as_deref(), c.version.as_deref()),
            (Some("9f8e"), Some("2024-11-05"))
        );
        // TypeScript SDK: `/messages?sessionId=`, a path that looks like Anthropic's.
        let p = head("POST", "/messages?sessionId=5d2c", &[JSON]);
        let c = call(classify(
            &p,
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        ));
        assert_eq!(
            (c.protocol, c.session.as_deref()),
            (Protocol::Mcp, Some("5d2c"))
        );
        let r = classify(
            &p,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"declined"}}"#,
        )
        .unwrap();
        assert!(matches!(r, Classified::Reply { session: Some(ref s), .. } if s == "5d2c"));
    }

    #[test]
    fn a2a_requests() {
        let h = head("POST", "/", &[JSON, ("a2a-version", "1.0")]);
        let c = call(classify(&h, br#"{"jsonrpc":"2.0","id":"1","method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hi"}]}}}"#));
        assert_eq!(
            (c.protocol, c.version.as_deref()),
            (Protocol::A2a, Some("1.0"))
        );
        let h = head("POST", "/", &[JSON]);
        let c = call(classify(&h, br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","kind":"message","messageId":"m2","parts":[{"kind":"text","text":"hi"}]}}}"#));
        assert_eq!(
            (c.protocol, c.version.as_deref()),
            (Protocol::A2a, Some("0.3"))
        );
        let c = call(classify(
            &h,
            br#"{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"id":"t1"}}"#,
        ));
        assert_eq!((c.protocol, c.name.as_deref()), (Protocol::A2a, Some("t1")));
        // With MCP headers, tasks/get is MCP's.
        let h = head(
            "POST",
            "/mcp",
            &[
                JSON,
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-session-id", "s"),
            ],
        );
        let c = call(classify(
            &h,
            br#"{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":"t1"}}"#,
        ));
        assert_eq!(c.protocol, Protocol::Mcp);
        let g = head("GET", "/.well-known/agent-card.json", &[]);
        assert_eq!(call(classify(&g, b"")).method, a2a::AGENT_CARD_METHOD);
    }

    #[test]
    fn llm_paths() {
        let h = head("POST", "/v1/chat/completions", &[JSON]);
        let c = call(classify(&h, br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#));
        assert_eq!(
            (c.protocol, c.method.as_str(), c.name.as_deref()),
            (Protocol::Llm, "chat.completions", Some("gpt-4o-mini"))
        );
        assert_eq!(c.llm.unwrap().max_output_tokens, Some(50));
        let h = head("POST", "/v1/messages", &[JSON]);
        let c = call(classify(
            &h,
            br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}"#,
        ));
        assert_eq!((c.protocol, c.method.as_str()), (Protocol::Llm, "messages"));
        assert!(classify(&h, b"{").is_err());
    }

    #[test]
    fn plain_http() {
        let h = head("POST", "/api/orders", &[JSON]);
        assert_eq!(
            classify(&h, br#"{"item":"book","method":"card"}"#).unwrap(),
            Classified::Plain
        );
        assert_eq!(classify(&h, br#"{"item":"bo"#).unwrap(), Classified::Plain);
        assert_eq!(classify(&h, br#"[1,2,3]"#).unwrap(), Classified::Plain);
        assert_eq!(classify(&h, b"").unwrap(), Classified::Plain);
        assert_eq!(
            classify(&head("GET", "/", &[]), b"").unwrap(),
            Classified::Plain
        );
        // JSON-RPC that is neither MCP nor A2A.
        assert_eq!(
            classify(
                &h,
                br#"{"jsonrpc":"1.0","id":"x","method":"getblockchaininfo","params":[]}"#
            )
            .unwrap(),
            Classified::Plain
        );
        assert_eq!(
            classify(
                &h,
                br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#
            )
            .unwrap(),
            Classified::Plain
        );
        assert_eq!(
            classify(
                &head("POST", "/up", &[("content-type", "text/plain")]),
                b"hello"
            )
            .unwrap(),
            Classified::Plain
        );
    }

    #[test]
    fn malformed_agent_requests_are_refused() {
        let mcp = head("POST", "/mcp", &[JSON, ("mcp-session-id", "s")]);
        let plain = head("POST", "/mcp", &[JSON]);
        // Truncated, on an MCP-looking request.
        assert!(matches!(
            classify(&mcp, br#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#),
            Err(L7Error::Parse(_))
        ));
        // Truncated without headers, but it says jsonrpc.
        assert!(matches!(
            classify(&plain, br#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#),
            Err(L7Error::Parse(_))
        ));
        // Batches.
        assert_eq!(
            classify(&mcp, br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#).unwrap_err(),
            L7Error::Batch
        );
        assert_eq!(
            classify(
                &plain,
                br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}]"#
            )
            .unwrap_err(),
            L7Error::Batch
        );
        // Invalid UTF-8.
        assert!(matches!(classify(&mcp, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xc3\x28\"}}"), Err(L7Error::Parse(_))));
        // Wrong version naming an MCP method, with or without headers.
        let v1 = br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"rm"}}"#;
        assert!(matches!(
            classify(&mcp, v1),
            Err(L7Error::InvalidRequest(_))
        ));
        assert!(matches!(
            classify(&plain, v1),
            Err(L7Error::InvalidRequest(_))
        ));
        // Duplicated method: servers disagree on which one wins.
        assert!(classify(
            &plain,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#
        )
        .is_err());
        // Not JSON at all, on an MCP request that says JSON.
        assert!(matches!(classify(&mcp, b"hello"), Err(L7Error::Parse(_))));
        // UTF-16 JSON.
        let utf16: Vec<u8> =
            r#"{"jsonrpc":"2.0"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(classify(&plain, &utf16).is_err());
        // Huge nesting: an error, not a stack overflow.
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}{}}}}}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert!(matches!(
            classify(&plain, deep.as_bytes()),
            Err(L7Error::Parse(_))
        ));
        assert!(classify(&mcp, "[".repeat(50_000).as_bytes()).is_err());
    }

    #[test]
    fn bom_is_read_like_the_server_reads_it() {
        let h = head("POST", "/mcp", &[JSON]);
        let c = call(classify(&h, b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"add\"}}"));
        assert_eq!(c.name.as_deref(), Some("add"));
    }

    #[test]
    fn ids_keep_their_type() {
        let h = head("POST", "/mcp", &[JSON, ("mcp-session-id", "s")]);
        let a = call(classify(
            &h,
            br#"{"jsonrpc":"2.0","id":"1","method":"ping"}"#,
        ));
        let b = call(classify(&h, br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#));
        assert_eq!(a.id, Some(RpcId::String("1".into())));
        assert_eq!(b.id, Some(RpcId::Number(1)));
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/json-rpc",
            "text/json",
        ] {
            assert!(is_json_media(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "application/jsonl",
            "multipart/form-data",
            "json",
            "application/+json",
        ] {
            assert!(!is_json_media(no), "{no}");
        }
    }
}
