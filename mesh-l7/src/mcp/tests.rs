use base64::Engine as _;
use http::request::Parts;
use serde_json::json;

use super::{generation::is_handshake_version, *};
use crate::{
    jsonrpc::{parse_message, Message},
    Call, Direction, L7Error, Protocol, RpcId,
};

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
        call_from_message(&r, Direction::ServerToClient, None, McpGeneration::Sessions).is_none()
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
