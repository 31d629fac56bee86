//! The response side: [`UsageTracker`] follows a response, streamed or
//! not, to the [`Usage`] it reports or to an estimate of it.
use serde::Serialize;

use super::{
    anthropic::{AnthropicEvent, AnthropicMessage},
    openai::{ChatChunk, ChatCompletion, ChatMessage, ResponseBody, ResponsesEvent},
    LlmApi,
};

/// Token usage of one LLM call, as the provider counts it.
///
/// The providers differ in what `input_tokens` holds: OpenAI's prompt tokens
/// include the cached ones, Anthropic's `input_tokens` excludes cache reads
/// and cache writes (`cached_input_tokens`, `cache_creation_input_tokens`
/// come on top). The numbers are kept as the provider gave them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cached input tokens (OpenAI `cached_tokens`, Anthropic cache reads).
    pub cached_input_tokens: u64,
    /// Anthropic `cache_creation_input_tokens` (input written to the cache).
    pub cache_creation_input_tokens: u64,
    /// OpenAI `reasoning_tokens`: hidden output tokens, included in
    /// `output_tokens`.
    pub reasoning_tokens: u64,
    /// True when the numbers are estimated (a stream cut before its usage).
    pub estimated: bool,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Follows one LLM response, streamed or not, to the tokens it used.
///
/// Holds counters only: nothing grows with the length of the stream (and a
/// copy is cheap).
#[derive(Clone, Debug)]
pub struct UsageTracker {
    api: LlmApi,
    /// What the provider reported so far (Anthropic's comes in pieces).
    usage: Usage,
    /// The provider's final usage arrived: `usage` is exact.
    usage_final: bool,
    /// Characters of output text (and tool-call arguments) seen, for the
    /// estimate when no final usage arrives.
    output_chars: u64,
    /// Something that looked like this API's response was read; without it
    /// there is no usage to report (an error body, another protocol).
    saw_response: bool,
    /// The response's own end marker was seen.
    saw_end: bool,
}

impl UsageTracker {
    pub fn new(api: LlmApi) -> Self {
        UsageTracker {
            api,
            usage: Usage::default(),
            usage_final: false,
            output_chars: 0,
            saw_response: false,
            saw_end: false,
        }
    }

    /// A non-streamed response body. A body that is not this API's response
    /// (an error object, not JSON) is ignored.
    pub fn feed_json(&mut self, body: &[u8]) {
        match self.api {
            LlmApi::ChatCompletions => {
                let Ok(completion) = serde_json::from_slice::<ChatCompletion>(body) else {
                    return;
                };
                if completion.choices.is_none() && completion.usage.is_none() {
                    return;
                }
                for choice in completion.choices.unwrap_or_default() {
                    if let Some(message) = choice.message {
                        self.add_chat_text(&message);
                    }
                }
                if let Some(usage) = completion.usage {
                    self.usage_final |= usage.apply(&mut self.usage);
                }
            }
            LlmApi::Responses => {
                let Ok(response) = serde_json::from_slice::<ResponseBody>(body) else {
                    return;
                };
                if response.output.is_none() && response.usage.is_none() {
                    return;
                }
                for item in response.output.unwrap_or_default() {
                    self.output_chars += item.arguments.0;
                    for part in item.content.unwrap_or_default() {
                        self.output_chars += part.text.0 + part.refusal.0;
                    }
                }
                if let Some(usage) = response.usage {
                    self.usage_final |= usage.apply(&mut self.usage);
                }
            }
            LlmApi::Messages => {
                let Ok(message) = serde_json::from_slice::<AnthropicMessage>(body) else {
                    return;
                };
                if message.content.is_none() && message.usage.is_none() {
                    return;
                }
                for block in message.content.unwrap_or_default() {
                    self.output_chars += block.text.0 + block.thinking.0;
                }
                if let Some(usage) = message.usage {
                    self.usage_final |= usage.apply(&mut self.usage);
                }
            }
        }
        self.saw_response = true;
        self.saw_end = true;
    }

    /// One event of a streamed response: its `event:` field and its data.
    /// Events that do not parse are skipped: a bad chunk costs its own
    /// tokens' accuracy, not the stream.
    pub fn feed_sse_event(&mut self, event: Option<&str>, data: &str) {
        match self.api {
            LlmApi::ChatCompletions => self.feed_chat_chunk(data),
            LlmApi::Responses => self.feed_responses_event(event, data),
            LlmApi::Messages => self.feed_anthropic_event(event, data),
        }
    }

    /// The response's end marker was seen: chat `[DONE]`, Responses
    /// `response.completed` / `.incomplete` / `.failed`, Anthropic
    /// `message_stop`, or a whole non-streamed body. Without it, a stream that
    /// closed was cut.
    pub fn saw_end(&self) -> bool {
        self.saw_end
    }

    /// Output tokens so far: the provider's count where it gives one as the
    /// stream goes (Anthropic), else one per four characters of text seen,
    /// whichever is larger.
    pub fn output_so_far(&self) -> u64 {
        self.usage.output_tokens.max(self.output_chars.div_ceil(4))
    }

    /// The call's usage once the response is over. `complete` says the body
    /// reached its end (it was not cut). None when nothing of an LLM response
    /// was seen (an error body, say).
    ///
    /// Exact when the provider's usage arrived. Otherwise estimated: output
    /// tokens as one per four characters of text seen (never fewer than the
    /// provider had already counted), input tokens as Anthropic's
    /// `message_start` reported them, else 0. An Anthropic `message_delta`
    /// count is final only if the stream was not cut before `message_stop`:
    /// there may be more than one.
    pub fn finish(self, complete: bool) -> Option<Usage> {
        if !self.saw_response {
            return None;
        }
        let exact = match self.api {
            LlmApi::Messages => self.usage_final && (self.saw_end || complete),
            LlmApi::ChatCompletions | LlmApi::Responses => self.usage_final,
        };
        let mut usage = self.usage;
        if exact {
            usage.estimated = false;
        } else {
            usage.output_tokens = usage.output_tokens.max(self.output_chars.div_ceil(4));
            usage.estimated = true;
        }
        Some(usage)
    }

    fn add_chat_text(&mut self, message: &ChatMessage) {
        self.output_chars += message.content.0 + message.refusal.0 + message.reasoning_content.0;
        for call in message.tool_calls.iter().flatten() {
            if let Some(function) = &call.function {
                self.output_chars += function.arguments.0;
            }
        }
    }

    fn feed_chat_chunk(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.saw_end = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<ChatChunk>(data) else {
            return;
        };
        if chunk.choices.is_none() && chunk.usage.is_none() {
            return;
        }
        self.saw_response = true;
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                self.add_chat_text(&delta);
            }
        }
        // Servers that report usage on every chunk report it cumulatively:
        // the latest replaces the earlier.
        if let Some(usage) = chunk.usage {
            let mut latest = Usage::default();
            if usage.apply(&mut latest) {
                self.usage = latest;
                self.usage_final = true;
            }
        }
    }

    fn feed_responses_event(&mut self, event: Option<&str>, data: &str) {
        let Ok(parsed) = serde_json::from_str::<ResponsesEvent>(data) else {
            return;
        };
        // The SDK dispatches on the data's `type`; the SSE name is the fallback.
        let kind = parsed.kind.as_deref().or(event).unwrap_or_default();
        if !kind.starts_with("response.") {
            return;
        }
        self.saw_response = true;
        match kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta" => {
                self.output_chars += parsed.delta.0;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.saw_end = true;
                if let Some(usage) = parsed.response.and_then(|r| r.usage) {
                    let mut reported = Usage::default();
                    if usage.apply(&mut reported) {
                        self.usage = reported;
                        self.usage_final = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn feed_anthropic_event(&mut self, event: Option<&str>, data: &str) {
        let Ok(parsed) = serde_json::from_str::<AnthropicEvent>(data) else {
            return;
        };
        // The SDK dispatches on the SSE event name; the data's `type` is the
        // fallback.
        let Some(kind) = event.or(parsed.kind.as_deref()) else {
            return;
        };
        match kind {
            "message_start" => {
                if let Some(usage) = parsed.message.and_then(|m| m.usage) {
                    // Input is known from here on; output only started.
                    usage.apply(&mut self.usage);
                }
            }
            "content_block_start" => {
                if let Some(block) = parsed.content_block {
                    self.output_chars += block.text.0 + block.thinking.0;
                }
            }
            "content_block_delta" => {
                if let Some(delta) = parsed.delta {
                    self.output_chars += delta.text.0 + delta.thinking.0 + delta.partial_json.0;
                }
            }
            "message_delta" => {
                // Cumulative counts: the latest replaces, never adds.
                if let Some(usage) = parsed.usage {
                    self.usage_final |= usage.apply(&mut self.usage);
                }
            }
            "message_stop" => self.saw_end = true,
            "ping" | "content_block_stop" => {}
            _ => return,
        }
        self.saw_response = true;
    }
}
