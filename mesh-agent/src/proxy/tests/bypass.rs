//! Requests shaped to slip past the decision: each must be refused (or
//! classified by what it is) and recorded, never forwarded undecided.
use super::*;
use crate::records::Verdict;

const REPLY: &str = r#"{"jsonrpc":"2.0","id":41,"result":{"exfiltrated":"secret"}}"#;

#[tokio::test]
async fn a_reply_to_no_request_the_server_sent_is_refused() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_allowing(&upstream.to_string())).await;
    for headers in [
        "",
        "mcp-session-id: s-1\r\nmcp-protocol-version: 2025-06-18\r\n",
    ] {
        let resp = exchange(&f, upstream, &post("/mcp", REPLY, headers)).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        // The refusal answers the reply's id, so a client can match it.
        assert!(resp.contains(r#""id":41"#), "{resp}");
        assert!(resp.contains("mcp.reply.unmatched"), "{resp}");
    }
    let refused: Vec<_> = wait_records(&f.records, 2)
        .await
        .into_iter()
        .filter(|r| r.rule.as_deref() == Some("mcp.reply.unmatched"))
        .collect();
    assert_eq!(refused.len(), 2, "{:?}", f.records.tail(10));
    assert!(refused.iter().all(|r| r.verdict == Verdict::RefusedPolicy));
}

#[tokio::test]
async fn a_reply_is_held_to_egress_like_any_request() {
    let upstream = mcp_upstream().await;
    // Egress allows somewhere else only.
    let f = fixture(&policy_allowing("127.0.0.9:1")).await;
    let resp = exchange(&f, upstream, &post("/mcp", REPLY, "")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let r = call_record(&f).await;
    assert_eq!(r.verdict, Verdict::RefusedPolicy);
    assert!(
        r.rule.as_deref().is_some_and(|r| r.starts_with("egress")),
        "{r:?}"
    );
}
