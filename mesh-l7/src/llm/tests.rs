use super::*;
use crate::sse::SseParser;
use crate::L7Error;

fn post(path: &str, body: &str) -> Option<Result<LlmRequest, L7Error>> {
    classify(&http::Method::POST, path, body.as_bytes())
}

fn usage(input: u64, output: u64, estimated: bool) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        estimated,
        ..Usage::default()
    }
}

#[test]
fn an_output_bound_is_added_in_the_apis_own_field() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for (api, field) in [
        (LlmApi::ChatCompletions, "max_completion_tokens"),
        (LlmApi::Responses, "max_output_tokens"),
        (LlmApi::Messages, "max_tokens"),
    ] {
        let out = rewrite_for_budget(api, body, bound(77)).expect("rewritten");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[field], 77, "{api:?}");
        assert_eq!(v["model"], "m");
        assert_eq!(v["messages"][0]["content"], "hi");
    }
    // Already bounded, or not an object: left alone.
    let bounded = br#"{"model":"m","max_tokens":5}"#;
    assert!(rewrite_for_budget(LlmApi::Messages, bounded, bound(77)).is_none());
    assert!(rewrite_for_budget(LlmApi::ChatCompletions, b"[1]", bound(77)).is_none());
}

fn bound(max_tokens: u64) -> BudgetRewrite {
    BudgetRewrite {
        max_tokens: Some(max_tokens),
        include_usage: false,
    }
}

#[test]
fn a_stream_is_asked_for_its_usage_and_the_extra_chunk_is_recognised() {
    let body = br#"{"model":"m","stream":true,"stream_options":{"other":1},"max_tokens":9}"#;
    let rewrite = BudgetRewrite {
        max_tokens: None,
        include_usage: true,
    };
    let out = rewrite_for_budget(LlmApi::ChatCompletions, body, rewrite).expect("rewritten");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["stream_options"]["other"], 1);
    assert_eq!(v["max_tokens"], 9);
    let no_options = br#"{"model":"m","stream":true}"#;
    let out = rewrite_for_budget(LlmApi::ChatCompletions, no_options, rewrite).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);

    assert!(is_usage_only_chunk(
        r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
    ));
    assert!(!is_usage_only_chunk(
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#
    ));
    assert!(!is_usage_only_chunk(
        r#"{"choices":[{"delta":{}}],"usage":{"total_tokens":5}}"#
    ));
    assert!(!is_usage_only_chunk("[DONE]"));
}

#[test]
fn a_background_response_is_recognised() {
    let req = post(
        "/v1/responses",
        r#"{"model":"m","background":true,"input":"x"}"#,
    )
    .unwrap()
    .unwrap();
    assert!(req.background);
    let req = post("/v1/responses", r#"{"model":"m","input":"x"}"#)
        .unwrap()
        .unwrap();
    assert!(!req.background);
}

#[test]
fn output_so_far_counts_text_as_it_streams() {
    let mut t = UsageTracker::new(LlmApi::ChatCompletions);
    assert_eq!(t.output_so_far(), 0);
    t.feed_sse_event(None, r#"{"choices":[{"delta":{"content":"abcde"}}]}"#);
    assert_eq!(t.output_so_far(), 2);
    t.feed_sse_event(None, r#"{"choices":[{"delta":{"content":"fgh"}}]}"#);
    assert_eq!(t.output_so_far(), 2);
    t.feed_sse_event(None, r#"{"choices":[{"delta":{"content":"i"}}]}"#);
    assert_eq!(t.output_so_far(), 3);
}

/// Runs a raw SSE stream through the parser and the tracker, as the proxy
/// does, in chunks of `chunk` bytes.
fn track_stream(api: LlmApi, stream: &str, chunk: usize) -> UsageTracker {
    let mut parser = SseParser::new(1 << 20);
    let mut tracker = UsageTracker::new(api);
    for piece in stream.as_bytes().chunks(chunk) {
        let fed = parser.feed(piece, |e| tracker.feed_sse_event(e.event, e.data));
        assert_eq!(fed, Ok(()));
    }
    parser.finish();
    tracker
}

// ---- classify ----

#[test]
fn classify_chat_completions() {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],
            "max_tokens":100,"max_completion_tokens":50,"stream":true,
            "stream_options":{"include_usage":true},"temperature":0.2}"#;
    let request = post("/v1/chat/completions", body).unwrap().unwrap();
    assert_eq!(
        request,
        LlmRequest {
            api: LlmApi::ChatCompletions,
            model: "gpt-4o-mini".into(),
            max_output_tokens: Some(50),
            stream: true,
            include_usage: true,
            input_bytes: body.len() as u64,
            background: false,
        }
    );
    assert_eq!(request.provider(), "openai");
    assert_eq!(request.api.method(), "chat.completions");

    // The older `max_tokens` when alone; a stream without include_usage.
    let request = post(
        "/openai/v1/chat/completions?api-version=2024-10-21",
        r#"{"model":"m","max_tokens":7,"stream":true,"messages":[]}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(request.max_output_tokens, Some(7));
    assert!(request.stream);
    assert!(!request.include_usage);

    // Not streamed: usage always comes.
    let request = post("/v1/chat/completions", r#"{"model":"m"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(request.max_output_tokens, None);
    assert!(!request.stream);
    assert!(request.include_usage);
}

#[test]
fn classify_responses_and_messages() {
    let request = post(
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hello","max_output_tokens":256,"max_tokens":9,"stream":true}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(request.api, LlmApi::Responses);
    assert_eq!(request.max_output_tokens, Some(256));
    assert!(request.stream && request.include_usage);
    assert_eq!(request.provider(), "openai");

    let request = post(
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,
                "messages":[{"role":"user","content":"h\u00e9llo \"quoted\""}]}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(request.api, LlmApi::Messages);
    assert_eq!(request.model, "claude-sonnet-4-5");
    assert_eq!(request.max_output_tokens, Some(1024));
    assert!(!request.stream);
    assert_eq!(request.provider(), "anthropic");

    // A model with escapes is decoded.
    let request = post("/v1/messages", r#"{"model":"a\/b\u0021","max_tokens":1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(request.model, "a/b!");
}

#[test]
fn classify_not_llm() {
    assert_eq!(post("/v1/models", "{}"), None);
    assert_eq!(post("/v1/messages/count_tokens", r#"{"model":"m"}"#), None);
    // A trailing slash routes to the same API on many servers: it is
    // accounted as that API, never passed as plain HTTP.
    assert!(post("/v1/chat/completions/", r#"{"model":"m"}"#).is_some());
    assert_eq!(post("/mcp", r#"{"jsonrpc":"2.0"}"#), None);
    assert_eq!(post("/search?q=/messages", "{}"), None);
    assert_eq!(
        classify(&http::Method::GET, "/v1/responses", b""),
        None,
        "GET is no generation"
    );
}

#[test]
fn classify_bad_bodies() {
    // (body, whether it is a JSON syntax error rather than a bad request)
    let cases = [
        ("", true),
        ("not json", true),
        (r#"{"model":"m""#, true),
        (r#"{"model":"m"} trailing"#, true),
        ("[]", false),
        (r#"["m",1,2,3,true,null]"#, false),
        (r#""model""#, false),
        ("{}", false),
        (r#"{"model":null}"#, false),
        (r#"{"model":""}"#, false),
        (r#"{"model":42}"#, false),
        (r#"{"model":"m","stream":"yes"}"#, false),
        (r#"{"model":"m","max_tokens":-1}"#, false),
        // Two models: which one the provider uses is not ours to guess.
        (r#"{"model":"cheap","model":"expensive"}"#, false),
    ];
    for (body, syntax) in cases {
        let error = post("/v1/chat/completions", body).unwrap().unwrap_err();
        if syntax {
            assert!(matches!(error, L7Error::Parse(_)), "{body}: {error:?}");
        } else {
            assert!(
                matches!(error, L7Error::InvalidRequest(_)),
                "{body}: {error:?}"
            );
        }
        assert!(error.to_string().contains("chat.completions"), "{error}");
    }
    let error = post("/v1/messages", "{}").unwrap().unwrap_err();
    assert_eq!(
        error,
        L7Error::InvalidRequest("messages request has no `model`".into())
    );
}

// ---- non-streamed usage ----

#[test]
fn chat_completion_body() {
    // As @copilotkit/aimock answers with the PEERS.md fixture.
    let body = br#"{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,
            "model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",
            "content":"Hi there"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    tracker.feed_json(body);
    assert!(tracker.saw_end());
    let got = tracker.finish(true).unwrap();
    assert_eq!(got, usage(11, 7, false));
    assert_eq!(got.total(), 18);
}

#[test]
fn chat_completion_cached_and_reasoning() {
    let body = br#"{"id":"chatcmpl-r","object":"chat.completion","model":"o3-mini",
            "choices":[{"index":0,"message":{"role":"assistant","content":"42",
            "refusal":null},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
            "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":256,"audio_tokens":0,
            "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#;
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    tracker.feed_json(body);
    assert_eq!(
        tracker.finish(true).unwrap(),
        Usage {
            input_tokens: 2006,
            output_tokens: 300,
            cached_input_tokens: 1920,
            reasoning_tokens: 256,
            ..Usage::default()
        }
    );
}

#[test]
fn chat_completion_without_usage_is_estimated() {
    let body = br#"{"choices":[{"message":{"role":"assistant","content":"123456789",
            "tool_calls":[{"id":"c","type":"function","function":{"name":"f",
            "arguments":"{\"a\":1}"}}]}}]}"#;
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    tracker.feed_json(body);
    // 9 + 7 characters: 4 tokens.
    assert_eq!(tracker.finish(true).unwrap(), usage(0, 4, true));
}

#[test]
fn responses_body() {
    let body = br#"{"id":"resp_1","object":"response","created_at":1741476542,
            "status":"completed","model":"gpt-4.1-2025-04-14",
            "output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant",
            "content":[{"type":"output_text","text":"Hi there","annotations":[]}]}],
            "usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":12},
            "output_tokens":87,"output_tokens_details":{"reasoning_tokens":64},
            "total_tokens":123}}"#;
    let mut tracker = UsageTracker::new(LlmApi::Responses);
    tracker.feed_json(body);
    assert_eq!(
        tracker.finish(true).unwrap(),
        Usage {
            input_tokens: 36,
            output_tokens: 87,
            cached_input_tokens: 12,
            reasoning_tokens: 64,
            ..Usage::default()
        }
    );
}

#[test]
fn anthropic_body() {
    let body = br#"{"id":"msg_01","type":"message","role":"assistant",
            "model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi there"}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":11,"cache_creation_input_tokens":100,
            "cache_read_input_tokens":2048,"output_tokens":7,
            "service_tier":"standard"}}"#;
    let mut tracker = UsageTracker::new(LlmApi::Messages);
    tracker.feed_json(body);
    let got = tracker.finish(true).unwrap();
    assert_eq!(
        got,
        Usage {
            input_tokens: 11,
            output_tokens: 7,
            cached_input_tokens: 2048,
            cache_creation_input_tokens: 100,
            ..Usage::default()
        }
    );
    assert_eq!(got.total(), 18);
}

#[test]
fn error_and_garbage_bodies_have_no_usage() {
    for api in [LlmApi::ChatCompletions, LlmApi::Responses, LlmApi::Messages] {
        for body in [
            &br#"{"error":{"message":"Rate limit","type":"rate_limit_error"}}"#[..],
            br#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
            b"<html>502</html>",
            b"",
            br#"{"usage":"#,
        ] {
            let mut tracker = UsageTracker::new(api);
            tracker.feed_json(body);
            assert!(!tracker.saw_end());
            assert_eq!(tracker.finish(true), None, "{api} {body:?}");
        }
    }
}

// ---- streamed usage ----

const CHAT_STREAM: &str = "\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}

data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18,\"prompt_tokens_details\":{\"cached_tokens\":3},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}

data: [DONE]

";

#[test]
fn chat_stream_with_usage() {
    for chunk in [1, 7, 64, CHAT_STREAM.len()] {
        let tracker = track_stream(LlmApi::ChatCompletions, CHAT_STREAM, chunk);
        assert!(tracker.saw_end());
        assert_eq!(
            tracker.finish(true).unwrap(),
            Usage {
                input_tokens: 11,
                output_tokens: 7,
                cached_input_tokens: 3,
                ..Usage::default()
            },
            "chunks of {chunk}"
        );
    }
}

#[test]
fn chat_stream_without_include_usage_is_estimated() {
    // The same stream, minus the usage chunk: "Hi there" is 8 characters.
    let stream: String = CHAT_STREAM
        .split("\n\n")
        .filter(|event| !event.contains("\"choices\":[]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let tracker = track_stream(LlmApi::ChatCompletions, &stream, 5);
    assert!(tracker.saw_end());
    assert_eq!(tracker.finish(true).unwrap(), usage(0, 2, true));
}

#[test]
fn chat_stream_cut_is_estimated() {
    // Cut inside the third chunk: only "Hi" was complete.
    let cut = CHAT_STREAM.find(" there").unwrap();
    let tracker = track_stream(LlmApi::ChatCompletions, &CHAT_STREAM[..cut], 3);
    assert!(!tracker.saw_end());
    assert_eq!(tracker.finish(false).unwrap(), usage(0, 1, true));
}

#[test]
fn chat_stream_tool_call_arguments_count() {
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    tracker.feed_sse_event(
            None,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        );
    tracker.feed_sse_event(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]}}]}"#,
        );
    // {"city":"Paris"} is 16 characters.
    assert_eq!(tracker.finish(false).unwrap(), usage(0, 4, true));
}

#[test]
fn chat_stream_usage_on_every_chunk_latest_wins() {
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    tracker.feed_sse_event(
            None,
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#,
        );
    tracker.feed_sse_event(
            None,
            r#"{"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        );
    tracker.feed_sse_event(None, "[DONE]");
    assert_eq!(tracker.finish(true).unwrap(), usage(5, 2, false));
}

#[test]
fn malformed_chunks_are_skipped() {
    let mut tracker = UsageTracker::new(LlmApi::ChatCompletions);
    for data in [
        "",
        "{",
        "null",
        "[1,2]",
        "\"text\"",
        r#"{"choices":"nope"}"#,
        r#"{"choices":[{"delta":{"content":"abcd"}}]}"#,
        r#"{"choices":[{"delta":{"content":{"weird":true}}}]}"#,
        r#"{"choices":[{"delta":{"content":"efgh"}}],"usage":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":"many","completion_tokens":-3}}"#,
    ] {
        tracker.feed_sse_event(None, data);
    }
    // A usage object without counts is no usage: "abcdefgh" is estimated.
    assert_eq!(tracker.finish(true).unwrap(), usage(0, 2, true));

    let mut tracker = UsageTracker::new(LlmApi::Messages);
    for data in [
        "{]",
        r#"{"type":"message_delta","usage":{"output_tokens":9}"#,
        "\u{0}",
    ] {
        tracker.feed_sse_event(Some("message_delta"), data);
    }
    tracker.feed_sse_event(Some("what"), r#"{"type":"what"}"#);
    assert_eq!(tracker.finish(false), None);

    let mut tracker = UsageTracker::new(LlmApi::Responses);
    tracker.feed_sse_event(Some("response.completed"), "{not json");
    tracker.feed_sse_event(None, r#"{"type":"error","code":"server_error"}"#);
    assert!(!tracker.saw_end());
    assert_eq!(tracker.finish(false), None);
}

const RESPONSES_STREAM: &str = "\
event: response.created
data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1\",\"output\":[],\"usage\":null}}

event: response.in_progress
data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"usage\":null}}

event: response.output_item.added
data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}

event: response.content_part.added
data: {\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],\"text\":\"\"}}

event: response.output_text.delta
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}

event: response.output_text.delta
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there, caf\\u00e9\"}

event: response.output_text.done
data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi there, caf\\u00e9\"}

event: response.completed
data: {\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1\",\"output\":[{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"text\":\"Hi there, caf\\u00e9\"}],\"role\":\"assistant\"}],\"usage\":{\"input_tokens\":11,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":18}}}

";

#[test]
fn responses_stream() {
    for chunk in [1, 13, RESPONSES_STREAM.len()] {
        let tracker = track_stream(LlmApi::Responses, RESPONSES_STREAM, chunk);
        assert!(tracker.saw_end());
        assert_eq!(
            tracker.finish(true).unwrap(),
            Usage {
                input_tokens: 11,
                output_tokens: 7,
                reasoning_tokens: 2,
                ..Usage::default()
            }
        );
    }
}

#[test]
fn responses_stream_cut_is_estimated() {
    let cut = RESPONSES_STREAM
        .find("event: response.output_text.done")
        .unwrap();
    let tracker = track_stream(LlmApi::Responses, &RESPONSES_STREAM[..cut], 9);
    assert!(!tracker.saw_end());
    // "Hi there, café": 14 characters (the é escaped in JSON is one).
    assert_eq!(tracker.finish(false).unwrap(), usage(0, 4, true));
}

#[test]
fn responses_incomplete_and_failed_end_the_stream() {
    let mut tracker = UsageTracker::new(LlmApi::Responses);
    tracker.feed_sse_event(
            Some("response.incomplete"),
            r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":20,"output_tokens":16}}}"#,
        );
    assert!(tracker.saw_end());
    assert_eq!(tracker.finish(true).unwrap(), usage(20, 16, false));

    // Failed without usage: estimated from what was seen.
    let mut tracker = UsageTracker::new(LlmApi::Responses);
    tracker.feed_sse_event(
        Some("response.output_text.delta"),
        r#"{"type":"response.output_text.delta","delta":"abcde"}"#,
    );
    tracker.feed_sse_event(
            Some("response.failed"),
            r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"},"usage":null}}"#,
        );
    assert!(tracker.saw_end());
    assert_eq!(tracker.finish(true).unwrap(), usage(0, 2, true));
}

const ANTHROPIC_STREAM: &str = "\
event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":40,\"output_tokens\":1}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there, how are you today?\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

#[test]
fn anthropic_stream_latest_message_delta_wins() {
    for chunk in [1, 11, ANTHROPIC_STREAM.len()] {
        let tracker = track_stream(LlmApi::Messages, ANTHROPIC_STREAM, chunk);
        assert!(tracker.saw_end());
        let got = tracker.finish(true).unwrap();
        assert_eq!(
            got,
            Usage {
                input_tokens: 11,
                output_tokens: 7,
                cached_input_tokens: 40,
                cache_creation_input_tokens: 5,
                ..Usage::default()
            },
            "4 + 7 would be a sum of cumulative counts"
        );
        assert_eq!(got.total(), 18);
    }
}

#[test]
fn anthropic_message_delta_may_update_input() {
    let mut tracker = UsageTracker::new(LlmApi::Messages);
    tracker.feed_sse_event(
        Some("message_start"),
        r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}"#,
    );
    tracker.feed_sse_event(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":9}}"#,
        );
    tracker.feed_sse_event(Some("message_stop"), r#"{"type":"message_stop"}"#);
    let got = tracker.finish(true).unwrap();
    assert_eq!((got.input_tokens, got.output_tokens), (12, 9));
    assert_eq!(got.cached_input_tokens, 3);
    assert!(!got.estimated);
}

#[test]
fn anthropic_stream_cut_keeps_message_start_input() {
    let cut = ANTHROPIC_STREAM.find("event: content_block_stop").unwrap();
    let tracker = track_stream(LlmApi::Messages, &ANTHROPIC_STREAM[..cut], 17);
    assert!(!tracker.saw_end());
    // "Hi there, how are you today?" is 28 characters: 7 tokens.
    assert_eq!(
        tracker.finish(false).unwrap(),
        Usage {
            input_tokens: 11,
            output_tokens: 7,
            cached_input_tokens: 40,
            cache_creation_input_tokens: 5,
            estimated: true,
            ..Usage::default()
        }
    );

    // Cut between the two message_delta events: the first count is not final.
    let cut = ANTHROPIC_STREAM.rfind("event: message_delta").unwrap();
    let tracker = track_stream(LlmApi::Messages, &ANTHROPIC_STREAM[..cut], 64);
    let got = tracker.finish(false).unwrap();
    assert_eq!(got.output_tokens, 7, "max of 4 reported and 7 estimated");
    assert!(got.estimated);
}

#[test]
fn anthropic_thinking_and_tool_input_count() {
    let mut tracker = UsageTracker::new(LlmApi::Messages);
    for data in [
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\"}"}}"#,
    ] {
        tracker.feed_sse_event(None, data);
    }
    // 10 thinking + 17 JSON characters: 7 tokens.
    assert_eq!(tracker.finish(false).unwrap(), usage(0, 7, true));
}

#[test]
fn anthropic_stream_error_event_only_has_no_usage() {
    let mut tracker = UsageTracker::new(LlmApi::Messages);
    tracker.feed_sse_event(
        Some("error"),
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(tracker.finish(false), None);
}
