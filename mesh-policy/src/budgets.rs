//! Which budgets a call counts against (ARCHITECTURE.md 5.3), read from the
//! same snapshot that decided the call.
//!
//! - An LLM call counts against the agent's `tokens` and `usd` budgets that
//!   name no `server` or `tool` (scoped budgets count calls only).
//! - An MCP `tools/call` counts against its `calls` budgets whose `server`
//!   (if set) is the `mcp[].server` the call matched and whose `tool` (if
//!   set, a glob) matches the tool.
//! - An A2A message (`SendMessage`, `SendStreamingMessage`, `message/send`,
//!   `message/stream`) counts against `calls` budgets whose `server` (if set)
//!   is the `a2a[].agent` it goes to and that name no `tool`.
//!
//! Nothing else is budgeted.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::compile::{AgentPolicy, Budget, BudgetLimit, Price};
use super::decide::{find_peer, find_server};
use super::decision::CallContext;
use super::egress::canonical_ip;
use super::glob::glob_matches;
use super::PolicySet;
use mesh_l7::Protocol;

/// The A2A methods that send a message (and so count as a call).
const A2A_MESSAGE_METHODS: &[&str] = &[
    "SendMessage",
    "SendStreamingMessage",
    "message/send",
    "message/stream",
];

/// The budgets LLM spend counts against: `tokens` and `usd` budgets that
/// name no server or tool.
fn llm_budgets(policy: &AgentPolicy) -> Vec<&Budget> {
    policy
        .budgets
        .iter()
        .filter(|b| {
            b.server.is_none() && b.tool.is_none() && !matches!(b.limit, BudgetLimit::Calls(_))
        })
        .collect()
}

/// Plain HTTP methods that read: free at an LLM endpoint.
const FREE_HTTP_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// What a call is charged against under one policy snapshot.
#[derive(Debug)]
pub struct BudgetScope<'p> {
    pub budgets: Vec<&'p Budget>,
    /// The agent's `prices`, by model.
    pub prices: &'p BTreeMap<String, Price>,
    /// `llm[].max_output_tokens` of the entry an LLM call matched.
    pub max_output_tokens: Option<u64>,
}

impl BudgetScope<'_> {
    /// Whether a `usd` budget is among them (then the model needs a price).
    pub fn counts_usd(&self) -> bool {
        self.budgets
            .iter()
            .any(|b| matches!(b.limit, BudgetLimit::Usd(_)))
    }

    /// Whether a `tokens` or `usd` budget is among them: what a call uses
    /// must then be readable.
    pub fn counts_tokens_or_usd(&self) -> bool {
        self.budgets
            .iter()
            .any(|b| matches!(b.limit, BudgetLimit::Usd(_) | BudgetLimit::Tokens(_)))
    }

    /// The price of `model`: its own entry, else the first entry whose key,
    /// read as a glob, matches it.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied().or_else(|| {
            self.prices
                .iter()
                .find(|(key, _)| glob_matches(key.as_bytes(), model.as_bytes()))
                .map(|(_, p)| *p)
        })
    }
}

impl PolicySet {
    /// The budgets `ctx`'s call counts against; None when it counts against
    /// none (no policy, no budgets, or a call that is not budgeted). Reads
    /// nothing else of the decision, so call it after an allow.
    pub fn budget_scope(&self, ctx: &CallContext<'_>) -> Option<BudgetScope<'_>> {
        let policy = self.agents.get(ctx.agent)?;
        if policy.budgets.is_empty() {
            return None;
        }
        let dst = SocketAddr::new(canonical_ip(ctx.server.ip()), ctx.server.port());
        let call = ctx.call;
        let mut max_output_tokens = None;
        let budgets: Vec<&Budget> = match call.protocol {
            Protocol::Llm => {
                let request = call.llm.as_ref()?;
                max_output_tokens = policy.llm.as_ref().and_then(|endpoints| {
                    endpoints
                        .iter()
                        .find(|e| {
                            e.provider.as_str() == request.provider()
                                && e.address.matches(dst, ctx.server_name, ctx.path)
                        })
                        .and_then(|e| e.max_output_tokens)
                });
                llm_budgets(policy)
            }
            Protocol::Mcp if call.method == "tools/call" => {
                let tool = call.name.as_deref().unwrap_or("");
                let server = policy
                    .mcp
                    .as_deref()
                    .and_then(|servers| find_server(servers, dst, ctx));
                policy
                    .budgets
                    .iter()
                    .filter(|b| matches!(b.limit, BudgetLimit::Calls(_)))
                    .filter(|b| {
                        b.server
                            .as_deref()
                            .is_none_or(|want| server.is_some_and(|s| *s.name == *want))
                    })
                    .filter(|b| {
                        b.tool
                            .as_deref()
                            .is_none_or(|glob| glob_matches(glob.as_bytes(), tool.as_bytes()))
                    })
                    .collect()
            }
            Protocol::A2a if A2A_MESSAGE_METHODS.contains(&call.method.as_str()) => {
                let peer = policy
                    .a2a
                    .as_deref()
                    .and_then(|peers| find_peer(peers, dst, ctx));
                policy
                    .budgets
                    .iter()
                    .filter(|b| matches!(b.limit, BudgetLimit::Calls(_)) && b.tool.is_none())
                    .filter(|b| {
                        b.server
                            .as_deref()
                            .is_none_or(|want| peer.is_some_and(|p| *p.agent == *want))
                    })
                    .collect()
            }
            // Anything else sent to an LLM endpoint (legacy completions,
            // embeddings, batches, a realtime upgrade) may spend tokens the
            // mesh cannot read: charged to the token and usd budgets, which
            // refuse it. Reading (GET, HEAD, OPTIONS) is free.
            Protocol::Http if !FREE_HTTP_METHODS.contains(&call.method.as_str()) => {
                policy.llm.as_deref().and_then(|endpoints| {
                    endpoints
                        .iter()
                        .find(|e| e.address.matches(dst, ctx.server_name, ctx.path))
                })?;
                llm_budgets(policy)
            }
            _ => return None,
        };
        if budgets.is_empty() {
            return None;
        }
        Some(BudgetScope {
            budgets,
            prices: &policy.prices,
            max_output_tokens,
        })
    }
}
