//! `meshctl policy explain`: which rule decides a hypothetical call, and why.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::decide::Trace;
use super::values::{Host, ServerAddress};
use super::{CallContext, Decision, PolicySet};
use mesh_l7::{Arguments, Call, Direction, Protocol};

/// A call to explain: `server` is an MCP server's name in the agent's policy
/// (`mcp[].server`) or its address (`host:port[/path]`).
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

/// Rule of an explanation whose query cannot be decided (the server is
/// neither a declared name nor an address, or the arguments are not an object).
pub const RULE_EXPLAIN_QUERY: &str = "explain.query";

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

    fn bad_query(reason: String) -> Explanation {
        Explanation {
            decision: "refuse".into(),
            rule: RULE_EXPLAIN_QUERY.into(),
            reason: Some(reason),
            steps: Vec::new(),
        }
    }
}

impl PolicySet {
    /// Decides `query` as an MCP `tools/call` the way the proxy would (egress,
    /// then the agent's mcp entry, deny globs, class, grant, conditions), and
    /// lists every step. A server named by a DNS name is taken as reached at
    /// an unknown address, with that name as SNI/Host.
    pub fn explain(&self, query: &ExplainQuery) -> Explanation {
        let mut steps = Vec::new();
        let declared = self
            .agents
            .get(query.agent.as_str())
            .and_then(|p| p.mcp.as_ref())
            .and_then(|servers| servers.iter().find(|s| *s.name == *query.server));
        let address = match declared {
            Some(server) => {
                steps.push(format!(
                    "server {:?} is mcp[{}] at {:?}",
                    query.server, server.name, server.address.text
                ));
                server.address.clone()
            }
            None => match ServerAddress::parse(&query.server) {
                Ok(address) => address,
                Err(why) => {
                    return Explanation::bad_query(format!(
                        "server {:?} is neither an mcp server of agent {} nor an address: {why}",
                        query.server, query.agent
                    ))
                }
            },
        };
        let (dst, server_name) = match &address.host {
            Host::Ip(ip) => (SocketAddr::new(*ip, address.port), None),
            Host::Name(name) => {
                steps.push(format!(
                    "{name} is a DNS name: decided by name, at an unknown address"
                ));
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), address.port),
                    Some(&**name),
                )
            }
        };
        let arguments = match &query.args {
            None | Some(serde_json::Value::Null) => None,
            Some(value @ serde_json::Value::Object(_)) => {
                match serde_json::value::to_raw_value(value)
                    .map_err(|e| e.to_string())
                    .and_then(|raw| Arguments::from_raw("args", &raw).map_err(|e| e.to_string()))
                {
                    Ok(arguments) => arguments,
                    Err(why) => return Explanation::bad_query(format!("invalid args: {why}")),
                }
            }
            Some(other) => {
                return Explanation::bad_query(format!("args must be a JSON object, not {other}"))
            }
        };
        let call = Call {
            protocol: Protocol::Mcp,
            direction: Direction::ClientToServer,
            method: "tools/call".into(),
            name: Some(query.tool.clone()),
            arguments,
            id: None,
            session: None,
            version: None,
            mcp: None,
            a2a: None,
            llm: None,
        };
        let ctx = CallContext {
            agent: &query.agent,
            cgroup_id: 0,
            pid: 0,
            uid: 0,
            server: dst,
            server_name,
            path: address.path.as_deref().unwrap_or("/"),
            call: &call,
        };
        let mut trace = Trace::on();
        let decision = self.decide_traced(&ctx, &mut trace);
        steps.extend(trace.into_steps());
        Explanation::from_decision(&decision, steps)
    }
}
