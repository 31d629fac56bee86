//! `approvals[]`: a call that an approvals rule names must wait for a
//! human. Holding it until someone approves is not built, so such a call is
//! held and the proxy answers the hold as a refusal that says approval is
//! required: it is never forwarded unapproved. A rule whose `when` cannot be
//! evaluated for a call (a missing argument, a wrong type) holds it too:
//! when mesh cannot tell, it refuses.

use std::net::SocketAddr;

use super::compile::AgentPolicy;
use super::condition::{CallVars, CelVars};
use super::decide::{find_peer, find_server, Trace};
use super::egress::canonical_ip;
use super::{CallContext, Decision};
use mesh_l7::Protocol;

/// The hold of the first approvals rule of `policy` that names the call,
/// for a call the rest of the policy allowed; None when none does (no
/// allocation then: a policy without approvals returns at once).
pub(super) fn approval_hold(
    policy: &AgentPolicy,
    ctx: &CallContext<'_>,
    trace: &mut Trace,
) -> Option<Decision> {
    if policy.approvals.is_empty() {
        return None;
    }
    let call = ctx.call;
    let dst = SocketAddr::new(canonical_ip(ctx.server.ip()), ctx.server.port());
    let server = match call.protocol {
        Protocol::Mcp => policy
            .mcp
            .as_deref()
            .and_then(|servers| find_server(servers, dst, ctx))
            .map(|s| &*s.name),
        Protocol::A2a => policy
            .a2a
            .as_deref()
            .and_then(|peers| find_peer(peers, dst, ctx))
            .map(|p| &*p.agent),
        _ => None,
    };
    let name = call.name.as_deref().unwrap_or("");
    let vars = CelVars::new(&CallVars {
        agent: ctx.agent,
        server: server.unwrap_or(""),
        tool: if call.method == "tools/call" {
            name
        } else {
            ""
        },
        method: &call.method,
        model: call.llm.as_ref().map_or("", |r| r.model.as_str()),
        args: call.arguments.as_ref(),
    });
    for approval in &policy.approvals {
        let rule = &approval.rule;
        let why = match approval.when.holds(&vars) {
            Ok(true) => "its condition holds".to_owned(),
            Ok(false) => {
                trace.step(|| format!("{rule} {:?}: does not hold", approval.when.text()));
                continue;
            }
            Err(why) => format!("its condition cannot be decided ({why})"),
        };
        trace.step(|| format!("{rule} {:?}: holds the call: {why}", approval.when.text()));
        return Some(Decision::Hold {
            reason: format!(
                "{rule} {:?} names this call ({why}); holding calls for a human is not built, \
                 so it is refused ({})",
                approval.when.text(),
                policy.file
            ),
            rule: rule.clone(),
        });
    }
    None
}
