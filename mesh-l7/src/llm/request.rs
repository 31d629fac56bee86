//! The request side: what an LLM request asks for, and the output bound
//! the proxy adds to one that sets none.
use serde::{Deserialize, Serialize};

use super::LlmApi;
use crate::L7Error;

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
