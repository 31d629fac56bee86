//! Anthropic Messages response shapes, streamed or not: only the fields
//! that carry output text and usage.
use serde::Deserialize;

use super::{
    lenient::{set, Count, TextChars},
    Usage,
};

/// Anthropic: a non-streamed message, or `message_start`'s `message`.
#[derive(Deserialize)]
pub(super) struct AnthropicMessage {
    #[serde(default)]
    pub(super) content: Option<Vec<AnthropicText>>,
    #[serde(default)]
    pub(super) usage: Option<AnthropicUsage>,
}

/// A content block or a delta: text, thinking, or tool input JSON.
#[derive(Deserialize)]
pub(super) struct AnthropicText {
    #[serde(default)]
    pub(super) text: TextChars,
    #[serde(default)]
    pub(super) thinking: TextChars,
    #[serde(default)]
    pub(super) partial_json: TextChars,
}

/// Anthropic: one streamed event.
#[derive(Deserialize)]
pub(super) struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<std::borrow::Cow<'a, str>>,
    /// `message_start`.
    #[serde(default)]
    pub(super) message: Option<AnthropicMessageStart>,
    /// `content_block_start`.
    #[serde(default)]
    pub(super) content_block: Option<AnthropicText>,
    /// `content_block_delta` (`message_delta`'s delta has no text: it reads
    /// as none).
    #[serde(default)]
    pub(super) delta: Option<AnthropicText>,
    /// `message_delta`.
    #[serde(default)]
    pub(super) usage: Option<AnthropicUsage>,
}

/// `message_start`'s message: its content is empty, only usage is read.
#[derive(Deserialize)]
pub(super) struct AnthropicMessageStart {
    #[serde(default)]
    pub(super) usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
pub(super) struct AnthropicUsage {
    #[serde(default)]
    pub(super) input_tokens: Count,
    #[serde(default)]
    pub(super) output_tokens: Count,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Count,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Count,
}

impl AnthropicUsage {
    /// Sets the counts given; absent ones keep what `message_start` said.
    /// True if it had the output count (see
    /// [`ChatUsage::apply`](super::openai::ChatUsage::apply)).
    pub(super) fn apply(self, usage: &mut Usage) -> bool {
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
