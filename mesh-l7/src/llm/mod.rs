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
//!
//! - `request`: [`classify`] and [`rewrite_for_budget`], the request side.
//! - `usage`: [`Usage`] and the [`UsageTracker`] that follows a response.
//! - `openai`, `anthropic`: the response shapes the tracker reads, per
//!   provider; `lenient`: the text and count readers they are built from.
use std::fmt;

use serde::Serialize;

mod anthropic;
mod lenient;
mod openai;
mod request;
mod usage;

#[cfg(test)]
mod tests;

pub use openai::is_usage_only_chunk;
pub use request::{classify, rewrite_for_budget, BudgetRewrite, LlmRequest};
pub use usage::{Usage, UsageTracker};

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
        // Servers route `/v1/chat/completions/` like the path without it.
        let path = path.trim_end_matches('/');
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
