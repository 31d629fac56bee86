//! A2A (agent to agent) JSON-RPC, v1.0 and v0.3.
use serde::Serialize;

/// A2A specifics of a [`super::Call`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct A2aDetails {
    /// `1.0` or `0.3`.
    pub version: String,
}
