//! The `params` members the MCP parsers read, borrowed from the body.
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    jsonrpc::{first_byte, from_raw, Str},
    L7Error,
};

/// The `params` members the mesh reads; everything else is skipped.
#[derive(Deserialize, Default)]
pub(super) struct Params<'a> {
    #[serde(default, borrow)]
    pub(super) name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(super) uri: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(super) arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", default, borrow)]
    pub(super) meta: Option<&'a RawValue>,
    #[serde(rename = "protocolVersion", default, borrow)]
    pub(super) protocol_version: Option<&'a RawValue>,
    #[serde(rename = "clientInfo", default, borrow)]
    pub(super) client_info: Option<&'a RawValue>,
    #[serde(rename = "inputResponses", default, borrow)]
    pub(super) input_responses: Option<&'a RawValue>,
    #[serde(rename = "requestState", default, borrow)]
    pub(super) request_state: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Params by name; positional params (an array) carry none of these.
    pub(super) fn parse(params: Option<&'a RawValue>) -> Result<Self, L7Error> {
        match params {
            Some(raw) if first_byte(raw.get()) == Some(b'{') => from_raw("params", raw),
            _ => Ok(Params::default()),
        }
    }

    pub(super) fn member(&self, key: &str) -> Option<&'a RawValue> {
        match key {
            "name" => self.name,
            "uri" => self.uri,
            _ => None,
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", default, borrow)]
    pub(super) protocol_version: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/clientInfo", default, borrow)]
    pub(super) client_info: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ClientInfo<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
    #[serde(default, borrow)]
    version: Option<Str<'a>>,
}

/// A member that must be a string when present.
pub(super) fn string_member<'a>(
    what: &str,
    raw: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, L7Error> {
    match raw {
        None => Ok(None),
        Some(raw) => from_raw::<Str<'a>>(what, raw)
            .map(|s| Some(s.0))
            .map_err(|_| L7Error::InvalidRequest(format!("{what} must be a string"))),
    }
}

/// `clientInfo` name and version; a malformed one is ignored (it is only
/// reported, never decided on).
pub(super) fn client_info(raw: Option<&RawValue>) -> (Option<String>, Option<String>) {
    raw.filter(|r| first_byte(r.get()) == Some(b'{'))
        .and_then(|r| serde_json::from_str::<ClientInfo<'_>>(r.get()).ok())
        .map(|c| {
            (
                c.name.map(|s| s.0.into_owned()),
                c.version.map(|s| s.0.into_owned()),
            )
        })
        .unwrap_or_default()
}
