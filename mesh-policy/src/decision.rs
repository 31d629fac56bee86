//! The decision point the proxy calls for every L7 call. [`PolicySet`]
//! implements it (`decide.rs`): egress first, then the section for the
//! call's protocol (ARCHITECTURE.md 5.1).
use std::{net::SocketAddr, sync::Arc};

use super::EgressDecision;
#[allow(unused_imports)] // named in the module documentation
use super::PolicySet;
/// Which list a list response is and what a server says of its tools: the
/// wire's terms, defined with the list filter in mesh-l7.
pub use mesh_l7::list_filter::{ListKind, ToolAnnotations};
use mesh_l7::Call;

/// Everything a decision may depend on: who calls (from the kernel, never from
/// headers), where to (the original destination and the name the agent used),
/// and what the bytes say.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub agent: &'a str,
    pub cgroup_id: u64,
    pub pid: u32,
    pub uid: u32,
    /// The original destination the agent connected to.
    pub server: SocketAddr,
    /// The TLS SNI or HTTP Host (without port) the agent sent, if any.
    pub server_name: Option<&'a str>,
    /// The HTTP request path (with query).
    pub path: &'a str,
    pub call: &'a Call,
}

/// What to do with one call. `rule` names what decided (audit, metrics and
/// the refusal the agent sees); shared text so an allow does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        rule: Arc<str>,
    },
    Refuse {
        rule: Arc<str>,
        reason: String,
    },
    /// A human must approve first. Until approvals exist the proxy answers a
    /// hold as a refusal that says approval is required.
    Hold {
        rule: Arc<str>,
        reason: String,
    },
}

impl Decision {
    pub fn rule(&self) -> &str {
        match self {
            Decision::Allow { rule }
            | Decision::Refuse { rule, .. }
            | Decision::Hold { rule, .. } => rule,
        }
    }

    /// The `decision` label value of `mesh_requests_total` and
    /// `mesh_tool_calls_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Refuse { .. } => "refuse",
            Decision::Hold { .. } => "hold",
        }
    }
}

/// Decides each call the proxy sees.
pub trait DecisionPoint: Send + Sync {
    fn decide(&self, ctx: &CallContext<'_>) -> Decision;

    /// Whether item `name` of a `kind` list stays in the list response of
    /// the list call in `ctx`: exactly when the agent may use it
    /// (`kind.use_method()` on `name` is not refused; conditions on
    /// arguments are decided per call). Default: everything stays.
    fn visible(&self, ctx: &CallContext<'_>, kind: ListKind, name: &str) -> bool {
        let _ = (ctx, kind, name);
        true
    }

    /// The tools a server listed in answer to the call in `ctx`, for servers
    /// whose annotations are trusted (`trust_annotations`). Called before
    /// [`DecisionPoint::visible`] for the same response.
    fn observe_tools(&self, ctx: &CallContext<'_>, tools: &[ToolAnnotations]) {
        let _ = (ctx, tools);
    }
}

impl From<EgressDecision> for Decision {
    fn from(d: EgressDecision) -> Decision {
        match d {
            EgressDecision::Allow { rule } => Decision::Allow { rule },
            EgressDecision::Refuse { rule, reason } => Decision::Refuse { rule, reason },
        }
    }
}
