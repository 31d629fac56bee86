//! LLM spend the mesh must be able to count: usage asked for and read,
//! calls it cannot count refused under token and usd budgets, and a response
//! it cannot read settled at its full reservation, never at zero.
use std::sync::Mutex;

use super::*;
use crate::records::Verdict;

/// Egress to `dst`, which is an `llm` endpoint, under a token budget.
fn llm_policy(dst: &str) -> String {
    format!(
        "{}llm:\n  - {{ provider: openai, address: \"{dst}\", models: [\"*\"] }}\n\
         budgets:\n  - {{ name: t, limit: {{ tokens: 100000 }}, window: 1h, on_exhaust: halt }}\n",
        policy_allowing(dst)
    )
}

fn used(f: &Fixture) -> (u64, u64) {
    let policy = f.policies.snapshot();
    let view = f.ledger.view("bot", &policy.budgets("bot")[0]);
    (view.used, view.reserved)
}

/// An upstream that keeps each request it gets (head and body) and answers
/// every one with `reply`.
async fn recording_upstream(reply: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + length {
                        break;
                    }
                }
                keep.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = s.write_all(reply).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_stream_is_asked_for_its_usage_and_settled_from_it() {
    let (upstream, seen) = recording_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}],\"usage\":null}\n\n\
          data: {\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":4,\"total_tokens\":25}}\n\n\
          data: [DONE]\n\n",
    )
    .await;
    let f = fixture(&llm_policy(&upstream.to_string())).await;
    let body = r#"{"model":"m","stream":true,"max_tokens":50,"messages":[]}"#;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.contains("hello") && resp.contains("[DONE]"), "{resp}");
    // The client did not ask for the usage chunk: it does not get it.
    assert!(!resp.contains("prompt_tokens"), "{resp}");
    let request = seen.lock().unwrap().remove(0);
    assert!(request.contains(r#""include_usage":true"#), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("accept-encoding: identity"),
        "{request}"
    );
    // Settled from the reported usage, not an estimate.
    assert_eq!(used(&f), (25, 0));
}

#[tokio::test]
async fn a_response_whose_usage_cannot_be_read_costs_its_full_reservation() {
    // The server compressed its answer anyway: the mesh cannot read usage.
    let (upstream, _) = recording_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n\
          content-length: 4\r\nconnection: close\r\n\r\n\x1f\x8b\x08\x00",
    )
    .await;
    let f = fixture(&llm_policy(&upstream.to_string())).await;
    let body = r#"{"model":"m","max_tokens":50,"messages":[]}"#;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let reserved = body.len() as u64 + 50;
    assert_eq!(used(&f), (reserved, 0));
    let r = call_record(&f).await;
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|r| r.contains("full reservation")),
        "{r:?}"
    );
}

#[tokio::test]
async fn calls_whose_usage_the_mesh_cannot_count_are_refused_under_a_token_budget() {
    let (upstream, seen) = recording_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    let f = fixture(&llm_policy(&upstream.to_string())).await;
    let background = r#"{"model":"m","background":true,"input":"write a novel"}"#;
    let legacy = r#"{"model":"m","prompt":"write a novel"}"#;
    for (path, body) in [
        ("/v1/responses", background),
        ("/v1/completions", legacy),
        ("/v1/batches", r#"{"input_file_id":"f"}"#),
        ("/v1/embeddings", r#"{"model":"m","input":"x"}"#),
    ] {
        let resp = exchange(&f, upstream, &post(path, body, "")).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{path}: {resp}");
        assert!(resp.contains("budgets[t]"), "{path}: {resp}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "an uncountable call was forwarded"
    );
    assert_eq!(used(&f), (0, 0));
    let refused = f
        .records
        .tail(10)
        .into_iter()
        .filter(|r| r.verdict == Verdict::RefusedPolicy && r.rule.as_deref() == Some("budgets[t]"))
        .count();
    assert_eq!(refused, 4, "{:?}", f.records.tail(10));

    // Reading is free: listing models goes through.
    let get = "GET /v1/models HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n";
    let resp = exchange(&f, upstream, get).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn an_event_too_large_to_hold_ends_the_stream_at_its_full_reservation() {
    // One event that never ends, past the bound the gate holds.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ")
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..(crate::config::MAX_SSE_EVENT_BYTES / chunk.len() + 8) {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let f = fixture(&llm_policy(&upstream.to_string())).await;
    let body = r#"{"model":"m","stream":true,"max_tokens":50,"messages":[]}"#;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{}",
        &resp[..200.min(resp.len())]
    );
    assert!(resp.contains("data: [DONE]"), "no clean end");
    assert!(
        resp.len() < crate::config::MAX_SSE_EVENT_BYTES,
        "the event went out"
    );
    let r = call_record(&f).await;
    assert!(
        r.reason.as_deref().is_some_and(|r| r.contains("grew past")),
        "{:?}",
        r.reason
    );
    let reserved = body.len() as u64 + 50;
    assert_eq!(used(&f), (reserved, 0));
}
