//! OpenAI response shapes (chat completions and Responses, streamed or not):
//! only the fields that carry output text and usage.
use serde::Deserialize;

use super::{
    lenient::{set, Count, TextChars},
    Usage,
};

/// OpenAI chat completion (non-streamed) or chunk (streamed): same fields,
/// `message` in one, `delta` in the other.
#[derive(Deserialize)]
pub(super) struct ChatCompletion {
    #[serde(default)]
    pub(super) choices: Option<Vec<ChatChoiceMessage>>,
    #[serde(default)]
    pub(super) usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
pub(super) struct ChatChoiceMessage {
    #[serde(default)]
    pub(super) message: Option<ChatMessage>,
}

#[derive(Deserialize)]
pub(super) struct ChatChunk {
    #[serde(default)]
    pub(super) choices: Option<Vec<ChatChoiceDelta>>,
    #[serde(default)]
    pub(super) usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
pub(super) struct ChatChoiceDelta {
    #[serde(default)]
    pub(super) delta: Option<ChatMessage>,
}

/// A chat message or delta: the text the model wrote.
#[derive(Deserialize)]
pub(super) struct ChatMessage {
    #[serde(default)]
    pub(super) content: TextChars,
    #[serde(default)]
    pub(super) refusal: TextChars,
    /// Reasoning text of OpenAI-compatible servers that stream it.
    #[serde(default)]
    pub(super) reasoning_content: TextChars,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<ChatToolCall>>,
}

#[derive(Deserialize)]
pub(super) struct ChatToolCall {
    #[serde(default)]
    pub(super) function: Option<ChatFunction>,
}

#[derive(Deserialize)]
pub(super) struct ChatFunction {
    #[serde(default)]
    pub(super) arguments: TextChars,
}

#[derive(Deserialize)]
pub(super) struct ChatUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Count,
    #[serde(default)]
    pub(super) completion_tokens: Count,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    pub(super) completion_tokens_details: Option<ReasoningDetails>,
}

impl ChatUsage {
    /// Sets the counts given; true if it had the output count, which makes it
    /// the provider's usage rather than an odd object.
    pub(super) fn apply(self, usage: &mut Usage) -> bool {
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
pub(super) struct CachedDetails {
    #[serde(default)]
    pub(super) cached_tokens: Count,
}

#[derive(Deserialize)]
pub(super) struct ReasoningDetails {
    #[serde(default)]
    pub(super) reasoning_tokens: Count,
}

/// OpenAI Responses: a non-streamed response object.
#[derive(Deserialize)]
pub(super) struct ResponseBody {
    #[serde(default)]
    pub(super) output: Option<Vec<ResponseOutputItem>>,
    #[serde(default)]
    pub(super) usage: Option<ResponsesUsage>,
}

/// An output item: a message with content parts, or a function call.
#[derive(Deserialize)]
pub(super) struct ResponseOutputItem {
    #[serde(default)]
    pub(super) content: Option<Vec<ResponseContentPart>>,
    #[serde(default)]
    pub(super) arguments: TextChars,
}

#[derive(Deserialize)]
pub(super) struct ResponseContentPart {
    #[serde(default)]
    pub(super) text: TextChars,
    #[serde(default)]
    pub(super) refusal: TextChars,
}

/// OpenAI Responses: one streamed event. The terminal events carry the whole
/// response object, of which only `usage` is read.
#[derive(Deserialize)]
pub(super) struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(super) delta: TextChars,
    #[serde(default)]
    pub(super) response: Option<ResponseUsageOnly>,
}

#[derive(Deserialize)]
pub(super) struct ResponseUsageOnly {
    #[serde(default)]
    pub(super) usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
pub(super) struct ResponsesUsage {
    #[serde(default)]
    pub(super) input_tokens: Count,
    #[serde(default)]
    pub(super) output_tokens: Count,
    #[serde(default)]
    pub(super) input_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    pub(super) output_tokens_details: Option<ReasoningDetails>,
}

impl ResponsesUsage {
    /// As [`ChatUsage::apply`].
    pub(super) fn apply(self, usage: &mut Usage) -> bool {
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

/// Whether an SSE event's data is the usage-only chunk a streamed chat
/// completion ends with when asked for `stream_options.include_usage`: no
/// choices, and a usage object.
pub fn is_usage_only_chunk(data: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Probe>(data)
        .is_ok_and(|p| p.choices.is_some_and(|c| c.is_empty()) && p.usage.is_some())
}
