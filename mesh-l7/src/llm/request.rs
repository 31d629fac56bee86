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
    /// OpenAI Responses `background: true`: the response is only a handle,
    /// and the usage comes later, to whoever polls for it.
    pub background: bool,
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
    #[serde(default)]
    background: Option<bool>,
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
        background: fields.background.unwrap_or(false),
    })
}

/// What the proxy adds to a budgeted request before forwarding it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetRewrite {
    /// An output bound, in the field the API reads (`max_completion_tokens`,
    /// `max_output_tokens`, `max_tokens`), when the request set none.
    pub max_tokens: Option<u64>,
    /// `stream_options.include_usage: true`, so a streamed chat completion
    /// reports its usage (the extra chunk is removed from what the client
    /// sees: it did not ask for it).
    pub include_usage: bool,
}

/// `body` with `rewrite` applied; None when there is nothing to add or the
/// body is not a JSON object (it was classified, so it is).
pub fn rewrite_for_budget(api: LlmApi, body: &[u8], rewrite: BudgetRewrite) -> Option<Vec<u8>> {
    if rewrite == BudgetRewrite::default() {
        return None;
    }
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    let mut changed = false;
    if let Some(max_tokens) = rewrite.max_tokens {
        let field = match api {
            LlmApi::ChatCompletions => "max_completion_tokens",
            LlmApi::Responses => "max_output_tokens",
            LlmApi::Messages => "max_tokens",
        };
        if !object.contains_key(field) {
            object.insert(field.to_owned(), max_tokens.into());
            changed = true;
        }
    }
    if rewrite.include_usage && api == LlmApi::ChatCompletions {
        let options = object
            .entry("stream_options")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !options.is_object() {
            // `null` (or anything else) asks for nothing.
            *options = serde_json::Value::Object(Default::default());
        }
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".to_owned(), true.into());
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&object).ok()
}
