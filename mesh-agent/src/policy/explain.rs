//! `meshctl policy explain`: which rule decides a hypothetical call, and why.
use serde::{Deserialize, Serialize};

use super::{Decision, PolicySet};

/// A call to explain: `server` is an MCP server's name in the agent's policy
/// (`mcp[].server`) or its address (`host:port`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainQuery {
    pub agent: String,
    pub server: String,
    pub tool: String,
    /// The call's arguments, for conditions (`when`).
    #[serde(default)]
    pub args: Option<serde_json::Value>,
}

/// The decision and the steps that led to it, in evaluation order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// `allow`, `refuse` or `hold`.
    pub decision: String,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<String>,
}

impl Explanation {
    pub fn from_decision(decision: &Decision, steps: Vec<String>) -> Explanation {
        let reason = match decision {
            Decision::Allow { .. } => None,
            Decision::Refuse { reason, .. } | Decision::Hold { reason, .. } => Some(reason.clone()),
        };
        Explanation {
            decision: decision.label().to_owned(),
            rule: decision.rule().to_owned(),
            reason,
            steps,
        }
    }
}

impl PolicySet {
    /// Decides `query` as a `tools/call` the way the proxy would, and says
    /// which rule decided.
    pub fn explain(&self, query: &ExplainQuery) -> Explanation {
        // Placeholder until the capability engine lands: no capability rules
        // exist yet, so every tool call is decided by egress alone.
        let decision = if self.has_agent(&query.agent) {
            Decision::Refuse {
                rule: "explain".into(),
                reason: "capability rules are not evaluated yet".into(),
            }
        } else {
            Decision::Refuse {
                rule: super::RULE_NO_POLICY.into(),
                reason: format!("agent {} has no policy", query.agent),
            }
        };
        Explanation::from_decision(&decision, vec![])
    }
}
