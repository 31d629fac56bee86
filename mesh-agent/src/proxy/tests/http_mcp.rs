//! MCP over HTTP/1.1 and HTTP/2: parsed, decided, forwarded, and its outcome
//! recorded; refusals and malformed calls answered in JSON-RPC.
use hyper_util::rt::TokioExecutor;

use super::*;
use crate::{l7::Protocol, records::Verdict};

#[tokio::test]
async fn an_mcp_call_is_parsed_forwarded_and_its_outcome_recorded() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""text":"5""#), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.protocol, Some(Protocol::Mcp));
    assert_eq!(r.verdict, Verdict::Forwarded);
    let call = r.call.unwrap();
    assert_eq!(call.method, "tools/call");
    assert_eq!(call.name.as_deref(), Some("add"));
    assert_eq!(
        call.arguments.as_ref().map(|a| a.to_value()),
        Some(serde_json::json!({"a":2,"b":3}))
    );
    assert_eq!(call.outcome.as_deref(), Some("result"));
    assert_eq!(r.server_name.as_deref(), Some("tools.example"));
}

#[tokio::test]
async fn an_sse_answer_is_matched_to_its_call() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let resp = exchange(&f, upstream, &post("/sse-answer", TOOLS_CALL, "")).await;
    assert!(resp.contains("event: message"), "{resp}");
    let call = call_record(&f).await.call.unwrap();
    assert_eq!(call.outcome.as_deref(), Some("result"));
    assert_eq!(call.jsonrpc_id, Some(crate::l7::RpcId::Number(3)));
}

#[tokio::test]
async fn a_refused_call_gets_the_jsonrpc_error_naming_the_rule() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing("127.0.0.9:1")).await;
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""code":-32001"#), "{resp}");
    assert!(resp.contains(r#""rule":"egress.default""#), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.verdict, Verdict::RefusedPolicy);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_and_the_proxy_keeps_serving() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let truncated = exchange(
        &f,
        upstream,
        &post("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#, ""),
    )
    .await;
    assert!(truncated.starts_with("HTTP/1.1 400"), "{truncated}");
    assert!(truncated.contains("-32700"), "{truncated}");
    let batch = exchange(&f, upstream, &post("/mcp", &format!("[{TOOLS_CALL}]"), "")).await;
    assert!(batch.starts_with("HTTP/1.1 400"), "{batch}");
    assert!(batch.contains("-32600"), "{batch}");
    // The fixture's limit is 1 KiB.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{}"}}}}"#,
        "x".repeat(2000)
    );
    let too_large = exchange(&f, upstream, &post("/mcp", &big, "")).await;
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
    let ok = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn mcp_headers_that_disagree_with_the_body_are_refused() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let headers =
        "mcp-protocol-version: 2026-07-28\r\nmcp-method: tools/call\r\nmcp-name: read_file\r\n";
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, headers)).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.verdict, Verdict::Malformed);
}

#[tokio::test]
async fn http2_prior_knowledge_is_parsed_and_forwarded_as_http2() {
    // An h2c upstream that answers a JSON-RPC result and says which
    // protocol version and authority it saw.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let seen = format!("{:?} {}", req.version(), req.uri());
                    let reply = serde_json::json!({"jsonrpc":"2.0","id":3,"result":{"seen":seen}});
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(Bytes::from(reply.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let client = governed_client(&f, upstream).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("http://tools.example/mcp")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            TOOLS_CALL.as_bytes(),
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["result"]["seen"], "HTTP/2.0 http://tools.example/mcp");
    let r = call_record(&f).await;
    let call = r.call.unwrap();
    assert_eq!(call.name.as_deref(), Some("add"));
    assert_eq!(call.outcome.as_deref(), Some("result"));
    assert_eq!(r.server_name.as_deref(), Some("tools.example"));
}
