//! Streams through the HTTP proxy: a protocol upgrade becomes a byte relay,
//! and a cut LLM stream is recorded with estimated usage.
use super::*;
use crate::l7::Protocol;

#[tokio::test]
async fn an_upgrade_becomes_a_byte_relay() {
    let upstream = raw_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
        true,
    )
    .await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let mut client = governed_client(&f, upstream).await;
    client
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    drop(client);
    let r = call_record(&f).await;
    assert_eq!(r.call.unwrap().http_status, 101);
}

#[tokio::test]
async fn a_cut_llm_stream_is_recorded_with_estimated_tokens() {
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
          4c\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello world, this is\"}}]}\n\n\r\n",
        false,
    )
    .await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.protocol, Some(Protocol::Llm));
    let call = r.call.unwrap();
    assert_eq!(call.method, "chat.completions");
    assert_eq!(call.name.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(call.outcome.as_deref(), Some("cut"), "{call:?}");
    let usage = call.usage.expect("estimated usage");
    assert!(usage.estimated);
    assert_eq!(usage.output_tokens, 5, "20 characters, about 4 per token");
}
