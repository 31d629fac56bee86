//! Refusals in each protocol's shape.
use serde_json::Value;

use super::*;
use crate::l7::request::Envelope;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn call(protocol: Protocol) -> Call {
    Call {
        protocol,
        direction: crate::l7::Direction::ClientToServer,
        method: String::new(),
        name: None,
        arguments: None,
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: None,
    }
}

async fn body_json(resp: Response<ProxyBody>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_jsonrpc_refusal_names_the_rule_with_the_callers_id() {
    let resp = jsonrpc_refusal(Some(&RpcId::Number(3)), "r1", "because", 9, Framing::Json);
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32001);
    assert_eq!(v["error"]["data"]["rule"], "r1");
    assert_eq!(v["error"]["data"]["audit_id"], 9);
}

#[tokio::test]
async fn sse_framing_is_one_message_event() {
    let resp = jsonrpc_refusal(Some(&RpcId::String("a".into())), "r", "x", 1, Framing::Sse);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    let data = text
        .strip_prefix("event: message\ndata: ")
        .unwrap()
        .strip_suffix("\n\n")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["id"], "a");
}

#[test]
fn framing_follows_accept() {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        "application/json, text/event-stream".parse().unwrap(),
    );
    assert_eq!(Framing::for_request(&h, false), Framing::Json);
    assert_eq!(Framing::for_request(&h, true), Framing::Sse);
    h.insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    assert_eq!(Framing::for_request(&h, false), Framing::Sse);
    assert_eq!(Framing::for_request(&HeaderMap::new(), true), Framing::Json);
}

#[tokio::test]
async fn llm_refusals_take_the_providers_shape() {
    let v = body_json(llm_refusal(
        LlmApi::Messages,
        StatusCode::FORBIDDEN,
        "r",
        "x",
        1,
    ))
    .await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    let resp = llm_refusal(
        LlmApi::ChatCompletions,
        StatusCode::TOO_MANY_REQUESTS,
        "r",
        "x",
        1,
    );
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], "mesh_budget");
    assert_eq!(v["error"]["type"], "insufficient_quota");
}

#[tokio::test]
async fn malformed_takes_the_errors_status_and_code() {
    let resp = malformed(&L7Error::TooLarge { limit: 4 }, &Envelope::default(), 2);
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["id"].is_null());
}

#[tokio::test]
async fn malformed_answers_the_requests_id_in_its_protocols_shape() {
    let bad = L7Error::InvalidRequest("params must be an object".into());
    let mcp = Envelope {
        id: Some(RpcId::Number(7)),
        protocol: Some(Protocol::Mcp),
    };
    let resp = malformed(&bad, &mcp, 2);
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = body_json(resp).await;
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (7.into(), (-32600).into())
    );

    // A2A servers (a2a-sdk) answer envelope errors with HTTP 200.
    let a2a = Envelope {
        id: Some(RpcId::String("t-1".into())),
        protocol: Some(Protocol::A2a),
    };
    let resp = malformed(&bad, &a2a, 2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_json(resp).await["id"], "t-1");

    // A batch refusal names the protocol it is about.
    let batch = Envelope {
        id: None,
        protocol: Some(Protocol::A2a),
    };
    let v = body_json(malformed(&L7Error::Batch, &batch, 2)).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("A2A")),
        "{v}"
    );
}

#[tokio::test]
async fn an_llm_refusal_is_a_403_in_the_providers_error_shape() {
    let mut c = call(Protocol::Llm);
    c.method = "messages".into();
    c.llm = Some(crate::l7::llm::LlmRequest {
        api: LlmApi::Messages,
        model: "claude-x".into(),
        max_output_tokens: None,
        stream: false,
        include_usage: true,
        input_bytes: 10,
        background: false,
    });
    let resp = refusal(
        &c,
        &HeaderMap::new(),
        StatusCode::FORBIDDEN,
        "llm[anthropic].models",
        "model claude-x is not allowed",
        7,
    );
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v = body_json(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("llm[anthropic].models"));
    assert_eq!(v["mesh"]["audit_id"], 7);

    c.llm = c.llm.map(|l| crate::l7::llm::LlmRequest {
        api: LlmApi::ChatCompletions,
        ..l
    });
    let resp = refusal(&c, &HeaderMap::new(), StatusCode::FORBIDDEN, "r", "x", 8);
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["type"], "permission_denied");
    assert_eq!(v["error"]["mesh"]["rule"], "r");
}

#[tokio::test]
async fn an_a2a_refusal_is_a_jsonrpc_error_with_the_callers_id() {
    let mut c = call(Protocol::A2a);
    c.method = "SendMessage".into();
    c.id = Some(RpcId::String("req-1".into()));
    let resp = refusal(
        &c,
        &headers(&[("accept", "application/json")]),
        StatusCode::FORBIDDEN,
        "a2a.undeclared",
        "no a2a entry for 127.0.0.2:9000",
        5,
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["error"]["code"], -32001);
    assert_eq!(
        v["error"]["message"],
        "refused by mesh policy rule a2a.undeclared"
    );
    assert_eq!(v["error"]["data"]["rule"], "a2a.undeclared");
    assert_eq!(v["error"]["data"]["audit_id"], 5);
}

#[test]
fn the_unfiltered_error_carries_the_callers_id() {
    let v: Value = serde_json::from_slice(&unfiltered_error(
        Some(&RpcId::Number(4)),
        -32600,
        "too big",
        9,
    ))
    .unwrap();
    assert_eq!(v["id"], 4);
    assert_eq!(v["error"]["code"], -32600);
    assert_eq!(v["error"]["data"]["rule"], RULE_LIST_FILTER);
    assert_eq!(v["error"]["data"]["audit_id"], 9);
}
