//! LLM request classification and usage tracking over any body.
//!
//! Input: a header byte, then the body.
//! - header bits 0-1: the API (chat completions, Responses, Messages; 3 is
//!   chat completions behind a gateway prefix);
//! - bit 2: the body is an SSE stream (else one JSON response);
//! - bits 3-4: how the SSE stream is cut into chunks (whole, halves, 7-byte
//!   chunks, bytes).
//!
//! The body is also classified as a request to that API's path. Each response
//! is tracked twice, to finish it both as complete and as cut.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use mesh_l7::{
    llm::{self, LlmApi, UsageTracker},
    sse::SseParser,
};

const APIS: [(LlmApi, &str); 4] = [
    (LlmApi::ChatCompletions, "/v1/chat/completions"),
    (LlmApi::Responses, "/v1/responses"),
    (LlmApi::Messages, "/v1/messages"),
    (LlmApi::ChatCompletions, "/openai/v1/chat/completions?api-version=1"),
];

fuzz_target!(|input: &[u8]| {
    let Some((&header, body)) = input.split_first() else {
        return;
    };
    let (api, path) = APIS[usize::from(header & 3)];
    let sse = header & 4 != 0;

    // The request side.
    match llm::classify(&Method::POST, path, body) {
        Some(Ok(req)) => {
            assert_eq!(req.api, api);
            assert!(!req.model.is_empty());
            assert_eq!(req.input_bytes, body.len() as u64);
            if api != LlmApi::ChatCompletions || !req.stream {
                assert!(req.include_usage);
            }
            let _ = serde_json::to_string(&req).expect("LlmRequest serializes");
        }
        Some(Err(e)) => {
            let _ = (e.to_string(), e.http_status(), e.jsonrpc_code());
        }
        None => panic!("{path} is an LLM API path"),
    }
    assert!(llm::classify(&Method::GET, path, body).is_none());

    // The response side.
    let mut complete = UsageTracker::new(api);
    let mut cut = UsageTracker::new(api);
    if sse {
        let mut parser = SseParser::new(1 << 20);
        let chunk_len = match (header >> 3) & 3 {
            0 => body.len().max(1),
            1 => body.len().div_ceil(2).max(1),
            2 => 7,
            _ => 1,
        };
        for chunk in body.chunks(chunk_len) {
            let fed = parser.feed(chunk, |ev| {
                complete.feed_sse_event(ev.event, ev.data);
                cut.feed_sse_event(ev.event, ev.data);
            });
            if fed.is_err() {
                break;
            }
        }
        let _ = parser.finish();
    } else {
        complete.feed_json(body);
        cut.feed_json(body);
    }
    assert_eq!(complete.saw_end(), cut.saw_end());
    let saw_end = complete.saw_end();
    let done = complete.finish(true);
    let cut_short = cut.finish(false);
    assert_eq!(done.is_some(), cut_short.is_some());
    if let (Some(done), Some(cut_short)) = (&done, &cut_short) {
        let _ = (done.total(), cut_short.total());
        // Cut or not, the same counts were reported; only Anthropic's
        // message_delta count needs the end to be final.
        if api != LlmApi::Messages || saw_end {
            assert_eq!(done, cut_short);
        }
        if !sse {
            assert!(saw_end);
        }
    }
});
