//! LLM provider APIs: request fields and token usage.
use serde::Serialize;

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

/// What an LLM request asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LlmRequest {
    pub api: LlmApi,
    pub model: String,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
}

/// Token usage of one LLM call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cached input tokens (OpenAI `cached_tokens`, Anthropic cache reads).
    pub cached_input_tokens: u64,
    /// True when the numbers are estimated (a stream cut before its usage).
    pub estimated: bool,
}
