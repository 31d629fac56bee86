//! How a call is decided (ARCHITECTURE.md 5.1): egress first, then the
//! section for the call's protocol.
//!
//! One implementation serves the proxy (`decide`, `visible`) and `meshctl
//! policy explain`: the steps are recorded only when a [`Trace`] is on, so
//! the proxy's allow path formats nothing and allocates nothing (rule names
//! are shared `Arc<str>`, globs match in place, conditions are evaluated
//! only for entries that have some).

use std::net::SocketAddr;
use std::sync::Arc;

use super::approvals::approval_hold;
use super::compile::{class_index, A2aPeer, AgentPolicy, LlmEndpoint, McpServer};
use super::condition::{CallVars, CelVars};
use super::egress::canonical_ip;
use super::glob::Glob;
use super::model::ToolClass;
use super::{
    CallContext, Decision, DecisionPoint, EgressDecision, EgressPolicy, ListKind, PolicySet,
    ToolAnnotations,
};
use mesh_l7::{a2a::AGENT_CARD_METHOD, Protocol};

/// The steps of a decision, when someone asked for them.
pub(super) struct Trace {
    steps: Option<Vec<String>>,
}

impl Trace {
    /// Records nothing (the proxy's case).
    pub fn off() -> Trace {
        Trace { steps: None }
    }

    pub fn on() -> Trace {
        Trace {
            steps: Some(Vec::new()),
        }
    }

    #[inline]
    pub fn step(&mut self, step: impl FnOnce() -> String) {
        if let Some(steps) = &mut self.steps {
            steps.push(step());
        }
    }

    pub fn into_steps(self) -> Vec<String> {
        self.steps.unwrap_or_default()
    }
}

/// How a tool got its class, for reasons and explanations.
enum ClassSource<'a> {
    Glob(&'a super::compile::NamedGlob),
    Annotation,
}

impl PolicySet {
    /// [`DecisionPoint::decide`], with its steps recorded in `trace`.
    pub(super) fn decide_traced(&self, ctx: &CallContext<'_>, trace: &mut Trace) -> Decision {
        let decision = self.decide_call(ctx, trace);
        if let (Decision::Allow { .. }, Some(policy)) = (&decision, self.agents.get(ctx.agent)) {
            if let Some(hold) = approval_hold(policy, ctx, trace) {
                return hold;
            }
        }
        decision
    }

    /// Egress, then the section for the call's protocol.
    fn decide_call(&self, ctx: &CallContext<'_>, trace: &mut Trace) -> Decision {
        let egress = self.decide_egress(ctx.agent, ctx.server, ctx.server_name);
        trace.step(|| match &egress {
            EgressDecision::Allow { rule } => format!("egress: allowed by {rule}"),
            EgressDecision::Refuse { rule, reason } => {
                format!("egress: refused by {rule}: {reason}")
            }
        });
        let egress_rule = match egress {
            EgressDecision::Allow { rule } => rule,
            refused => return refused.into(),
        };
        // Egress allowed, so the agent has a policy.
        let Some(policy) = self.agents.get(ctx.agent) else {
            return Decision::Allow { rule: egress_rule };
        };
        let dst = SocketAddr::new(canonical_ip(ctx.server.ip()), ctx.server.port());
        match ctx.call.protocol {
            Protocol::Mcp => match &policy.mcp {
                Some(servers) => decide_mcp(self, policy, servers, ctx, dst, trace),
                None => {
                    trace.step(|| "no mcp section: MCP is governed by egress alone".into());
                    Decision::Allow { rule: egress_rule }
                }
            },
            Protocol::Llm => match &policy.llm {
                Some(endpoints) => decide_llm(policy, endpoints, ctx, dst, trace),
                None => {
                    trace.step(|| "no llm section: LLM calls are governed by egress alone".into());
                    Decision::Allow { rule: egress_rule }
                }
            },
            Protocol::A2a => match &policy.a2a {
                Some(_) if ctx.call.method == AGENT_CARD_METHOD => {
                    trace.step(|| "A2A agent card: readable wherever egress allows".into());
                    Decision::Allow { rule: egress_rule }
                }
                Some(peers) => match find_peer(peers, dst, ctx) {
                    Some(peer) => {
                        trace.step(|| {
                            format!("{}: address {:?} matches", peer.rule, peer.address.text)
                        });
                        Decision::Allow {
                            rule: peer.rule.clone(),
                        }
                    }
                    None => Decision::Refuse {
                        rule: policy.a2a_undeclared.clone(),
                        reason: format!(
                            "A2A agent at {} is not declared in the a2a section of agent {} ({})",
                            describe(dst, ctx.server_name, ctx.path),
                            ctx.agent,
                            policy.file
                        ),
                    },
                },
                None => {
                    trace.step(|| "no a2a section: A2A is governed by egress alone".into());
                    Decision::Allow { rule: egress_rule }
                }
            },
            Protocol::Http | Protocol::Tcp | Protocol::Tls => Decision::Allow { rule: egress_rule },
        }
    }
}

/// The `a2a` entry whose address the call's destination matches.
pub(super) fn find_peer<'p>(
    peers: &'p [A2aPeer],
    dst: SocketAddr,
    ctx: &CallContext<'_>,
) -> Option<&'p A2aPeer> {
    peers
        .iter()
        .find(|p| p.address.matches(dst, ctx.server_name, ctx.path))
}

/// The `mcp` entry whose address the call's destination matches.
pub(super) fn find_server<'p>(
    servers: &'p [McpServer],
    dst: SocketAddr,
    ctx: &CallContext<'_>,
) -> Option<&'p McpServer> {
    servers
        .iter()
        .find(|s| s.address.matches(dst, ctx.server_name, ctx.path))
}

fn decide_mcp(
    set: &PolicySet,
    policy: &AgentPolicy,
    servers: &[McpServer],
    ctx: &CallContext<'_>,
    dst: SocketAddr,
    trace: &mut Trace,
) -> Decision {
    let Some(server) = find_server(servers, dst, ctx) else {
        trace.step(|| "no mcp entry's address matches".into());
        return Decision::Refuse {
            rule: policy.mcp_undeclared.clone(),
            reason: format!(
                "MCP server at {} is not declared in the mcp section of agent {} ({})",
                describe(dst, ctx.server_name, ctx.path),
                ctx.agent,
                policy.file
            ),
        };
    };
    trace.step(|| {
        format!(
            "{}: address {:?} matches",
            server.entry_rule, server.address.text
        )
    });
    let call = ctx.call;
    let name = call.name.as_deref().unwrap_or("");
    match call.method.as_str() {
        "tools/call" => {
            let rule = match tool_use(set, policy, server, ctx.agent, name, trace) {
                Ok(rule) => rule,
                Err(refused) => return refused,
            };
            if !server.when.is_empty() {
                let vars = CelVars::new(&CallVars {
                    agent: ctx.agent,
                    server: &server.name,
                    tool: name,
                    method: &call.method,
                    model: "",
                    args: call.arguments.as_ref(),
                });
                for (condition, when_rule) in &server.when {
                    match condition.evaluate(&vars) {
                        Ok(()) => {
                            trace.step(|| format!("{when_rule} {:?}: holds", condition.text()))
                        }
                        Err(why) => {
                            trace.step(|| {
                                format!("{when_rule} {:?}: does not hold: {why}", condition.text())
                            });
                            return Decision::Refuse {
                                rule: when_rule.clone(),
                                reason: format!(
                                    "condition {when_rule} {:?} does not hold for tool {name:?}: {why} ({})",
                                    condition.text(),
                                    policy.file
                                ),
                            };
                        }
                    }
                }
            }
            Decision::Allow { rule: rule.clone() }
        }
        "resources/read" => allow_listed(
            policy,
            server.resources.as_deref(),
            &server.resources_rule,
            "resource",
            name,
            trace,
        ),
        "prompts/get" => allow_listed(
            policy,
            server.prompts.as_deref(),
            &server.prompts_rule,
            "prompt",
            name,
            trace,
        ),
        _ => {
            trace.step(|| format!("method {}: allowed on a declared server", call.method));
            Decision::Allow {
                rule: server.entry_rule.clone(),
            }
        }
    }
}

/// Deny globs, class, grant: whether `tool` may be called on `server`
/// (conditions aside). `Ok` carries the grant rule that allows it.
fn tool_use<'p>(
    set: &PolicySet,
    policy: &AgentPolicy,
    server: &'p McpServer,
    agent: &str,
    tool: &str,
    trace: &mut Trace,
) -> Result<&'p Arc<str>, Decision> {
    if let Some(deny) = server.deny.iter().find(|d| d.glob.matches(tool)) {
        trace.step(|| format!("{} {:?} matches: refused", deny.rule, deny.glob.as_str()));
        return Err(Decision::Refuse {
            rule: deny.rule.clone(),
            reason: format!(
                "tool {tool:?} is denied by {} {:?} ({})",
                deny.rule,
                deny.glob.as_str(),
                policy.file
            ),
        });
    }
    let by_glob = ToolClass::ALL.into_iter().find_map(|class| {
        server.classes[class_index(class)]
            .iter()
            .find(|g| g.glob.matches(tool))
            .map(|g| (class, ClassSource::Glob(g)))
    });
    let classified = by_glob.or_else(|| {
        if server.trust_annotations {
            set.annotations
                .class(agent, &server.address.text, tool)
                .map(|class| (class, ClassSource::Annotation))
        } else {
            None
        }
    });
    let Some((class, source)) = classified else {
        let annotations = if server.trust_annotations {
            ", and the server's tools/list annotations (as last seen) do not list it"
        } else {
            ""
        };
        trace.step(|| {
            format!(
                "no glob of {}.tools classifies {tool:?}{annotations}",
                server.entry_rule
            )
        });
        return Err(Decision::Refuse {
            rule: server.unknown.clone(),
            reason: format!(
                "unknown tool {tool:?}: no glob of {}.tools classifies it{annotations} ({})",
                server.entry_rule, policy.file
            ),
        });
    };
    let how = |source: &ClassSource<'_>| match source {
        ClassSource::Glob(g) => format!("{} {:?}", g.rule, g.glob.as_str()),
        ClassSource::Annotation => "the server's tools/list annotations".to_owned(),
    };
    trace.step(|| format!("{} classifies {tool:?} as {}", how(&source), class.as_str()));
    let index = class_index(class);
    if !server.granted[index] {
        let granted: Vec<&str> = ToolClass::ALL
            .into_iter()
            .filter(|c| server.granted[class_index(*c)])
            .map(ToolClass::as_str)
            .collect();
        trace.step(|| {
            format!(
                "{} [{}] does not include {}: refused",
                server.grant_refused,
                granted.join(", "),
                class.as_str()
            )
        });
        return Err(Decision::Refuse {
            rule: server.grant_refused.clone(),
            reason: format!(
                "tool {tool:?} is {} (by {}) but {} is [{}] ({})",
                class.as_str(),
                how(&source),
                server.grant_refused,
                granted.join(", "),
                policy.file
            ),
        });
    }
    let rule = &server.grant_rules[index];
    trace.step(|| format!("{rule}: granted"));
    Ok(rule)
}

/// `resources/read` and `prompts/get`: the name must match the allow list;
/// an absent list allows nothing.
fn allow_listed(
    policy: &AgentPolicy,
    list: Option<&[Glob]>,
    rule: &Arc<str>,
    what: &str,
    name: &str,
    trace: &mut Trace,
) -> Decision {
    match list.unwrap_or(&[]).iter().position(|g| g.matches(name)) {
        Some(i) => {
            trace.step(|| format!("{rule}[{i}] matches {what} {name:?}"));
            Decision::Allow { rule: rule.clone() }
        }
        None => {
            let why = if list.is_none() {
                "the list is absent, which allows nothing"
            } else {
                "no glob matches"
            };
            trace.step(|| format!("{rule}: {why}"));
            Decision::Refuse {
                rule: rule.clone(),
                reason: format!(
                    "{what} {name:?} is not allowed by {rule}: {why} ({})",
                    policy.file
                ),
            }
        }
    }
}

fn decide_llm(
    policy: &AgentPolicy,
    endpoints: &[LlmEndpoint],
    ctx: &CallContext<'_>,
    dst: SocketAddr,
    trace: &mut Trace,
) -> Decision {
    let request = ctx.call.llm.as_ref();
    let provider = request.map(|r| r.provider());
    let model = request.map_or("", |r| r.model.as_str());
    let endpoint = endpoints.iter().find(|e| {
        Some(e.provider.as_str()) == provider && e.address.matches(dst, ctx.server_name, ctx.path)
    });
    let Some(endpoint) = endpoint else {
        return Decision::Refuse {
            rule: policy.llm_undeclared.clone(),
            reason: format!(
                "LLM endpoint {} ({} API) is not declared in the llm section of agent {} ({})",
                describe(dst, ctx.server_name, ctx.path),
                provider.unwrap_or("unknown"),
                ctx.agent,
                policy.file
            ),
        };
    };
    trace.step(|| {
        format!(
            "llm entry for {} at {:?} matches",
            endpoint.provider.as_str(),
            endpoint.address.text
        )
    });
    if let Some(glob) = endpoint.models.iter().find(|g| g.matches(model)) {
        trace.step(|| {
            format!(
                "{} {:?} matches model {model:?}",
                endpoint.rule,
                glob.as_str()
            )
        });
        return Decision::Allow {
            rule: endpoint.rule.clone(),
        };
    }
    Decision::Refuse {
        rule: endpoint.rule.clone(),
        reason: format!(
            "model {model:?} is not in {} [{}] ({})",
            endpoint.rule,
            endpoint
                .models
                .iter()
                .map(|g| format!("{:?}", g.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            policy.file
        ),
    }
}

/// `127.0.0.2:7001/mcp (server name "x")`, for reasons.
fn describe(dst: SocketAddr, server_name: Option<&str>, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match server_name {
        Some(name) => format!("{dst}{path} (server name {name:?})"),
        None => format!("{dst}{path}"),
    }
}

impl DecisionPoint for PolicySet {
    fn decide(&self, ctx: &CallContext<'_>) -> Decision {
        self.decide_traced(ctx, &mut Trace::off())
    }

    /// Same rule as `decide` for `kind.use_method()` of `name`, without
    /// `when` conditions (they may read arguments, decided per call).
    fn visible(&self, ctx: &CallContext<'_>, kind: ListKind, name: &str) -> bool {
        let Some(policy) = self.agents.get(ctx.agent) else {
            return false;
        };
        let Some(servers) = &policy.mcp else {
            return true;
        };
        let dst = SocketAddr::new(canonical_ip(ctx.server.ip()), ctx.server.port());
        let Some(server) = find_server(servers, dst, ctx) else {
            return false;
        };
        let listed = |list: &Option<Vec<Glob>>| {
            list.as_deref()
                .is_some_and(|l| l.iter().any(|g| g.matches(name)))
        };
        match kind {
            ListKind::Tools => {
                tool_use(self, policy, server, ctx.agent, name, &mut Trace::off()).is_ok()
            }
            ListKind::Resources => listed(&server.resources),
            ListKind::Prompts => listed(&server.prompts),
        }
    }

    fn observe_tools(&self, ctx: &CallContext<'_>, tools: &[ToolAnnotations]) {
        let Some(servers) = self.agents.get(ctx.agent).and_then(|p| p.mcp.as_ref()) else {
            return;
        };
        let dst = SocketAddr::new(canonical_ip(ctx.server.ip()), ctx.server.port());
        if let Some(server) = find_server(servers, dst, ctx) {
            if server.trust_annotations {
                self.annotations
                    .observe(ctx.agent, &server.address.text, tools);
            }
        }
    }
}
