//! LLM provider APIs: request fields and token usage.
//!
//! [`classify`] reads what an LLM request asks for (model, output bound,
//! streaming) before it is forwarded, so policy and budgets can decide on it.
//! [`UsageTracker`] reads the response as it is relayed, streamed or not, and
//! says how many tokens the call used: exactly when the provider reported it,
//! estimated from the text seen when the stream was cut first (or the client
//! did not ask OpenAI for streamed usage).
//!
//! Both parse only the fields they need into small borrowed structs; the rest
//! of a body (a long prompt, a whole `response` object) is skipped by serde
//! without being built.
use std::fmt;

use serde::{
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};

use super::L7Error;

/// Which provider API a request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmApi {
    /// OpenAI `POST …/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST …/responses`.
    Responses,
    /// Anthropic `POST …/messages`.
    Messages,
}

impl LlmApi {
    /// The `provider` label of `mesh_llm_tokens_total`: who defined the API
    /// (OpenAI-compatible servers are counted as "openai").
    pub fn provider(self) -> &'static str {
        match self {
            LlmApi::ChatCompletions | LlmApi::Responses => "openai",
            LlmApi::Messages => "anthropic",
        }
    }

    /// The [`super::Call`] `method` of a call to this API.
    pub fn method(self) -> &'static str {
        match self {
            LlmApi::ChatCompletions => "chat.completions",
            LlmApi::Responses => "responses",
            LlmApi::Messages => "messages",
        }
    }

    /// Which API a request path is, whatever prefix it has (`/v1`, a gateway's
    /// `/openai/v1`, …). None if it is none of them.
    fn from_path(path: &str) -> Option<LlmApi> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if path.ends_with("/chat/completions") {
            Some(LlmApi::ChatCompletions)
        } else if path.ends_with("/responses") {
            Some(LlmApi::Responses)
        } else if path.ends_with("/messages") {
            Some(LlmApi::Messages)
        } else {
            None
        }
    }
}

impl fmt::Display for LlmApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// What an LLM request asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LlmRequest {
    pub api: LlmApi,
    pub model: String,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
    /// Whether the response will report usage. Always for Responses and
    /// Messages, and for non-streamed chat completions; a streamed chat
    /// completion reports it only with `stream_options.include_usage: true`,
    /// so false here means its tokens can only be estimated.
    pub include_usage: bool,
    /// Length of the request body: a bound on the prompt's size for budgets
    /// before any usage is known.
    pub input_bytes: u64,
}

impl LlmRequest {
    /// See [`LlmApi::provider`].
    pub fn provider(&self) -> &'static str {
        self.api.provider()
    }
}

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

/// Reads what an LLM request asks for. None if `method` and `path` are not an
/// LLM API call; otherwise the request's fields, or why its body cannot be
/// governed (not JSON, not an object, no string `model`, fields of the wrong
/// type, a key given twice).
pub fn classify(
    method: &http::Method,
    path: &str,
    body: &[u8],
) -> Option<Result<LlmRequest, L7Error>> {
    if method != http::Method::POST {
        return None;
    }
    let api = LlmApi::from_path(path)?;
    Some(parse_request(api, body))
}

/// The request fields [`classify`] reads; everything else is skipped.
#[derive(Deserialize)]
struct RequestFields<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn parse_request(api: LlmApi, body: &[u8]) -> Result<LlmRequest, L7Error> {
    let fields: RequestFields<'_> = serde_json::from_slice(body).map_err(|e| {
        let message = format!("{api} request body: {e}");
        match e.classify() {
            serde_json::error::Category::Data => L7Error::InvalidRequest(message),
            _ => L7Error::Parse(message),
        }
    })?;
    // serde also reads a struct from an array of its fields in order: refuse
    // what no provider accepts.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(L7Error::InvalidRequest(format!(
            "{api} request body is not a JSON object"
        )));
    }
    let model = match fields.model {
        Some(model) if !model.is_empty() => model.into_owned(),
        Some(_) => {
            return Err(L7Error::InvalidRequest(format!(
                "{api} request: `model` is empty"
            )))
        }
        None => {
            return Err(L7Error::InvalidRequest(format!(
                "{api} request has no `model`"
            )))
        }
    };
    let stream = fields.stream.unwrap_or(false);
    let (max_output_tokens, include_usage) = match api {
        LlmApi::ChatCompletions => (
            fields.max_completion_tokens.or(fields.max_tokens),
            !stream
                || fields
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
        ),
        LlmApi::Responses => (fields.max_output_tokens, true),
        LlmApi::Messages => (fields.max_tokens, true),
    };
    Ok(LlmRequest {
        api,
        model,
        max_output_tokens,
        stream,
        include_usage,
        input_bytes: body.len() as u64,
    })
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

/// Characters of a JSON string; any other JSON value counts as none, so an
/// odd field does not lose the rest of its event.
#[derive(Debug, Default, Clone, Copy)]
struct TextChars(u64);

impl<'de> Deserialize<'de> for TextChars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = TextChars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<TextChars, E> {
                Ok(TextChars(text.chars().count() as u64))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextChars, E> {
                Ok(TextChars(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextChars, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TextChars(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextChars, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TextChars(0))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// A token count: a non-negative JSON number (floats truncated). Null,
/// absent or anything else is None, which leaves the earlier value alone.
#[derive(Debug, Default, Clone, Copy)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Count, E> {
                // `as` saturates; NaN and negatives are no count.
                Ok(Count((n.is_finite() && n >= 0.0).then_some(n as u64)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// Sets `field` when the count was given.
fn set(field: &mut u64, count: Count) {
    if let Some(n) = count.0 {
        *field = n;
    }
}

/// OpenAI chat completion (non-streamed) or chunk (streamed): same fields,
/// `message` in one, `delta` in the other.
#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    choices: Option<Vec<ChatChoiceMessage>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct ChatChoiceMessage {
    #[serde(default)]
    message: Option<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Option<Vec<ChatChoiceDelta>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct ChatChoiceDelta {
    #[serde(default)]
    delta: Option<ChatMessage>,
}

/// A chat message or delta: the text the model wrote.
#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: TextChars,
    #[serde(default)]
    refusal: TextChars,
    /// Reasoning text of OpenAI-compatible servers that stream it.
    #[serde(default)]
    reasoning_content: TextChars,
    #[serde(default)]
    tool_calls: Option<Vec<ChatToolCall>>,
}

#[derive(Deserialize)]
struct ChatToolCall {
    #[serde(default)]
    function: Option<ChatFunction>,
}

#[derive(Deserialize)]
struct ChatFunction {
    #[serde(default)]
    arguments: TextChars,
}

#[derive(Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
    #[serde(default)]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningDetails>,
}

impl ChatUsage {
    /// Sets the counts given; true if it had the output count, which makes it
    /// the provider's usage rather than an odd object.
    fn apply(self, usage: &mut Usage) -> bool {
        let has_output = self.completion_tokens.0.is_some();
        set(&mut usage.input_tokens, self.prompt_tokens);
        set(&mut usage.output_tokens, self.completion_tokens);
        if let Some(details) = self.prompt_tokens_details {
            set(&mut usage.cached_input_tokens, details.cached_tokens);
        }
        if let Some(details) = self.completion_tokens_details {
            set(&mut usage.reasoning_tokens, details.reasoning_tokens);
        }
        has_output
    }
}

#[derive(Deserialize)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: Count,
}

#[derive(Deserialize)]
struct ReasoningDetails {
    #[serde(default)]
    reasoning_tokens: Count,
}

/// OpenAI Responses: a non-streamed response object.
#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    output: Option<Vec<ResponseOutputItem>>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

/// An output item: a message with content parts, or a function call.
#[derive(Deserialize)]
struct ResponseOutputItem {
    #[serde(default)]
    content: Option<Vec<ResponseContentPart>>,
    #[serde(default)]
    arguments: TextChars,
}

#[derive(Deserialize)]
struct ResponseContentPart {
    #[serde(default)]
    text: TextChars,
    #[serde(default)]
    refusal: TextChars,
}

/// OpenAI Responses: one streamed event. The terminal events carry the whole
/// response object, of which only `usage` is read.
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    delta: TextChars,
    #[serde(default)]
    response: Option<ResponseUsageOnly>,
}

#[derive(Deserialize)]
struct ResponseUsageOnly {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
    #[serde(default)]
    input_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    output_tokens_details: Option<ReasoningDetails>,
}

impl ResponsesUsage {
    /// As [`ChatUsage::apply`].
    fn apply(self, usage: &mut Usage) -> bool {
        let has_output = self.output_tokens.0.is_some();
        set(&mut usage.input_tokens, self.input_tokens);
        set(&mut usage.output_tokens, self.output_tokens);
        if let Some(details) = self.input_tokens_details {
            set(&mut usage.cached_input_tokens, details.cached_tokens);
        }
        if let Some(details) = self.output_tokens_details {
            set(&mut usage.reasoning_tokens, details.reasoning_tokens);
        }
        has_output
    }
}

/// Anthropic: a non-streamed message, or `message_start`'s `message`.
#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    content: Option<Vec<AnthropicText>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// A content block or a delta: text, thinking, or tool input JSON.
#[derive(Deserialize)]
struct AnthropicText {
    #[serde(default)]
    text: TextChars,
    #[serde(default)]
    thinking: TextChars,
    #[serde(default)]
    partial_json: TextChars,
}

/// Anthropic: one streamed event.
#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    /// `message_start`.
    #[serde(default)]
    message: Option<AnthropicMessageStart>,
    /// `content_block_start`.
    #[serde(default)]
    content_block: Option<AnthropicText>,
    /// `content_block_delta` (`message_delta`'s delta has no text: it reads
    /// as none).
    #[serde(default)]
    delta: Option<AnthropicText>,
    /// `message_delta`.
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// `message_start`'s message: its content is empty, only usage is read.
#[derive(Deserialize)]
struct AnthropicMessageStart {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
    #[serde(default)]
    cache_read_input_tokens: Count,
    #[serde(default)]
    cache_creation_input_tokens: Count,
}

impl AnthropicUsage {
    /// Sets the counts given; absent ones keep what `message_start` said.
    /// True if it had the output count (see [`ChatUsage::apply`]).
    fn apply(self, usage: &mut Usage) -> bool {
        let has_output = self.output_tokens.0.is_some();
        set(&mut usage.input_tokens, self.input_tokens);
        set(&mut usage.output_tokens, self.output_tokens);
        set(&mut usage.cached_input_tokens, self.cache_read_input_tokens);
        set(
            &mut usage.cache_creation_input_tokens,
            self.cache_creation_input_tokens,
        );
        has_output
    }
}

/// `body` with an output bound of `max_tokens` added, in the field `api`
/// reads (`max_completion_tokens`, `max_output_tokens`, `max_tokens`); None
/// when the body is not a JSON object (it was classified, so it is) or
/// already has one.
pub fn with_output_bound(api: LlmApi, body: &[u8], max_tokens: u64) -> Option<Vec<u8>> {
    let field = match api {
        LlmApi::ChatCompletions => "max_completion_tokens",
        LlmApi::Responses => "max_output_tokens",
        LlmApi::Messages => "max_tokens",
    };
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    if object.contains_key(field) {
        return None;
    }
    object.insert(field.to_owned(), max_tokens.into());
    serde_json::to_vec(&object).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

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
            let out = with_output_bound(api, body, 77).expect("rewritten");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v[field], 77, "{api:?}");
            assert_eq!(v["model"], "m");
            assert_eq!(v["messages"][0]["content"], "hi");
        }
        // Already bounded, or not an object: left alone.
        let bounded = br#"{"model":"m","max_tokens":5}"#;
        assert!(with_output_bound(LlmApi::Messages, bounded, 77).is_none());
        assert!(with_output_bound(LlmApi::ChatCompletions, b"[1]", 77).is_none());
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
        assert_eq!(post("/v1/chat/completions/", r#"{"model":"m"}"#), None);
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
}
