//! Budgets on the HTTP path: reserved before forwarding, settled from the
//! response, a stream cut cleanly at its reservation, and refusals (429,
//! 403, hold, quarantine) that spend nothing.
use super::*;
use crate::records::Verdict;

/// `policy_allowing(dst)` with one budget.
fn policy_with_budget(dst: &str, budget: &str) -> String {
    format!("{}budgets:\n  - {budget}\n", policy_allowing(dst))
}

/// The ledger's view of the fixture agent's first budget.
fn first_budget(f: &Fixture) -> crate::budget::BudgetView {
    let policy = f.policies.snapshot();
    f.ledger.view("bot", &policy.budgets("bot")[0])
}

const CHAT_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn a_budgeted_stream_ends_cleanly_at_its_reservation() {
    // Three events of 20 characters (5 tokens each) and the end; the
    // call reserved 8 output tokens, so the second event would pass it.
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 242\r\n\r\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"aaaaaaaaaaaaaaaaaaaa\"}}]}\n\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bbbbbbbbbbbbbbbbbbbb\"}}]}\n\n\
          data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cccccccccccccccccccc\"}}]}\n\n\
          data: [DONE]\n\n",
        false,
    )
    .await;
    let f = fixture(&policy_with_budget(
        &upstream.to_string(),
        "{ name: t, limit: { tokens: 100000 }, window: 1h, on_exhaust: halt }",
    ))
    .await;
    let resp = exchange(
        &f,
        upstream,
        &post("/v1/chat/completions", CHAT_STREAM_BODY, ""),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("aaaaaaaaaaaaaaaaaaaa"), "{resp}");
    assert!(
        !resp.contains("bbbb"),
        "the event past the bound went out: {resp}"
    );
    // The last event is the API's own end, then the chunked body's end.
    assert!(
        resp.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"),
        "no clean end: {resp:?}"
    );
    let r = call_record(&f).await;
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("reservation of 8 output tokens"),
        "{reason}"
    );
    let budget = r.call.unwrap().budget.expect("budget in the record");
    assert!(budget.cut);
    let input_bound = CHAT_STREAM_BODY.len() as u64;
    assert_eq!(budget.reserved.tokens, input_bound + 8);
    // Settled at the estimate: the whole prompt plus the 5 tokens sent.
    let settled = budget.settled.expect("settled");
    assert_eq!(settled.tokens, input_bound + 5);
    let view = first_budget(&f);
    assert_eq!((view.used, view.reserved), (input_bound + 5, 0));
}

#[tokio::test]
async fn a_json_llm_response_settles_its_usage_and_a_call_over_budget_gets_429() {
    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n\
          {\"choices\":[{\"message\":{\"content\":\"Hi there\"}}],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}",
        false,
    )
    .await;
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    // Room for the first call's reservation, not for a second one after
    // the first settled at 18 tokens.
    let limit = body.len() as u64 + 10 + 17;
    let f = fixture(&policy_with_budget(
        &upstream.to_string(),
        &format!("{{ name: t, limit: {{ tokens: {limit} }}, window: 1h, on_exhaust: halt }}"),
    ))
    .await;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("Hi there"), "{resp}");
    let view = first_budget(&f);
    assert_eq!((view.used, view.reserved), (18, 0));

    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: "),
        "{resp}"
    );
    let json = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "mesh_budget");
    assert_eq!(v["error"]["mesh"]["rule"], "budgets[t]");
    assert_eq!(first_budget(&f).used, 18, "a refusal spends nothing");
}

#[tokio::test]
async fn a_call_budget_refuses_the_call_past_it_and_quarantines() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_budget(
        &upstream.to_string(),
        "{ name: runaway, limit: { calls: 2 }, window: 1m, on_exhaust: quarantine }",
    ))
    .await;
    for _ in 0..2 {
        let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
        assert!(resp.contains(r#""text":"5""#), "{resp}");
    }
    assert_eq!(first_budget(&f).used, 2);
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("-32001") && resp.contains("budgets[runaway]"),
        "{resp}"
    );
    // The quarantine follows the refusal, once it is sent.
    let mut quarantined = false;
    for _ in 0..200 {
        quarantined = f.maps.tags.lock().unwrap()[&7].quarantined();
        if quarantined {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(quarantined, "the agent was not quarantined");
    assert_eq!(first_budget(&f).used, 2);
}

#[tokio::test]
async fn a_model_without_a_price_under_a_usd_budget_is_refused_for_good() {
    // Never dialled: the refusal comes before forwarding.
    let upstream = raw_upstream(
        b"HTTP/1.1 500 Unexpected\r\ncontent-length: 0\r\n\r\n",
        false,
    )
    .await;
    let f = fixture(&policy_with_budget(
        &upstream.to_string(),
        "{ name: spend, limit: { usd: 5 }, window: 24h, on_exhaust: halt }",
    ))
    .await;
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = exchange(&f, upstream, &post("/v1/chat/completions", body, "")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("has no entry in prices"), "{resp}");
    assert!(resp.contains(r#""code":"mesh_policy""#), "{resp}");
    assert!(resp.contains("budgets[spend]"), "{resp}");
    assert_eq!(first_budget(&f).used, 0);
}

#[tokio::test]
async fn an_escalating_budget_answers_a_hold_that_says_approval_is_required() {
    let upstream = mcp_upstream().await;
    let f = fixture(&policy_with_budget(
        &upstream.to_string(),
        "{ name: calls, limit: { calls: 1 }, window: 1h, on_exhaust: escalate }",
    ))
    .await;
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(resp.contains(r#""text":"5""#), "{resp}");
    let resp = exchange(&f, upstream, &post("/mcp", TOOLS_CALL, "")).await;
    assert!(
        resp.contains("-32001") && resp.contains("budgets[calls]"),
        "{resp}"
    );
    assert!(resp.contains("approval required"), "{resp}");
    let held = wait_records(&f.records, 2)
        .await
        .into_iter()
        .find(|r| r.verdict == Verdict::Held)
        .expect("a held record");
    assert_eq!(held.rule.as_deref(), Some("budgets[calls]"));
    assert!(!f.maps.tags.lock().unwrap()[&7].quarantined());
}
