//! From a parsed policy document to the structures decisions read: rule
//! names formatted once (shared `Arc<str>`, so an allow never allocates),
//! globs and addresses parsed, conditions compiled. Checks that relate
//! several values of a document (duplicate names, one limit of three,
//! enough approvers) run here and are located in the file afterwards.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::condition::Condition;
use super::egress::{EgressEntry, UdpAllow};
use super::glob::Glob;
use super::model::{EgressDefault, OnExhaust, PolicyDoc, Provider, QuarantineMode, ToolClass};
use super::values::ServerAddress;
use super::yaml::Seg;
use super::RULE_EGRESS_DEFAULT;

/// Rule of an MCP call to a server the agent's `mcp` section does not list.
pub const RULE_MCP_UNDECLARED: &str = "mcp.undeclared";
/// Rule of an LLM call to an endpoint the agent's `llm` section does not list.
pub const RULE_LLM_UNDECLARED: &str = "llm.undeclared";
/// Rule of an A2A call to an address the agent's `a2a` section does not list.
pub const RULE_A2A_UNDECLARED: &str = "a2a.undeclared";

/// One agent's compiled policy.
#[derive(Debug)]
pub(super) struct AgentPolicy {
    /// The file it came from, for reasons.
    pub file: Arc<str>,
    pub default: EgressDefault,
    /// [`RULE_EGRESS_DEFAULT`], shared.
    pub default_rule: Arc<str>,
    /// TCP entries of `egress.allow` (rule names keep their index in the list).
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// The `udp://` entries of `egress.allow`, for the kernel.
    pub udp_allow: Vec<UdpAllow>,
    /// `ingress.allow`, sorted, without duplicates.
    pub ingress_ports: Vec<u16>,
    pub cgroup: Option<String>,
    /// `tls.terminate` entries.
    pub terminate: Vec<EgressEntry>,
    pub upstream_ca: Option<Arc<str>>,
    /// `None`: no `mcp` section (egress alone governs MCP).
    pub mcp: Option<Vec<McpServer>>,
    pub llm: Option<Vec<LlmEndpoint>>,
    pub a2a: Option<Vec<A2aPeer>>,
    pub mcp_undeclared: Arc<str>,
    pub llm_undeclared: Arc<str>,
    pub a2a_undeclared: Arc<str>,
    pub prices: BTreeMap<String, Price>,
    pub budgets: Vec<Budget>,
    pub approvals: Vec<Approval>,
    pub quarantine: Option<Quarantine>,
}

/// An egress entry with its precomputed rule name (no formatting per decision).
#[derive(Debug)]
pub(super) struct Rule {
    pub entry: EgressEntry,
    pub name: Arc<str>,
}

/// A glob with its rule name (`mcp[tickets].tools.deny[0]`).
#[derive(Debug)]
pub(super) struct NamedGlob {
    pub glob: Glob,
    pub rule: Arc<str>,
}

/// `mcp[]`, compiled.
#[derive(Debug)]
pub(super) struct McpServer {
    pub name: Box<str>,
    pub address: ServerAddress,
    pub trust_annotations: bool,
    pub deny: Vec<NamedGlob>,
    /// Globs by class, indexed by [`class_index`].
    pub classes: [Vec<NamedGlob>; 3],
    /// Whether each class is granted, indexed by [`class_index`].
    pub granted: [bool; 3],
    /// `mcp[NAME].grant.CLASS`, indexed by [`class_index`].
    pub grant_rules: [Arc<str>; 3],
    /// `mcp[NAME].grant`: a class that is not granted.
    pub grant_refused: Arc<str>,
    /// `mcp[NAME].tools.unknown`: no glob or annotation classifies the tool.
    pub unknown: Arc<str>,
    pub resources: Option<Vec<Glob>>,
    pub resources_rule: Arc<str>,
    pub prompts: Option<Vec<Glob>>,
    pub prompts_rule: Arc<str>,
    pub when: Vec<(Condition, Arc<str>)>,
    /// `mcp[NAME]`: methods other than tools/call, resources/read, prompts/get.
    pub entry_rule: Arc<str>,
}

pub(super) fn class_index(class: ToolClass) -> usize {
    match class {
        ToolClass::Read => 0,
        ToolClass::Write => 1,
        ToolClass::Execute => 2,
    }
}

/// `llm[]`, compiled.
#[derive(Debug)]
pub(super) struct LlmEndpoint {
    pub provider: Provider,
    pub address: ServerAddress,
    pub models: Vec<Glob>,
    /// `llm[PROVIDER].models` (or `llm[INDEX].models` when the provider is
    /// listed more than once).
    pub rule: Arc<str>,
    /// `max_output_tokens`: the output bound of budgeted requests without one.
    pub max_output_tokens: Option<u64>,
}

/// `a2a[]`, compiled.
#[derive(Debug)]
pub(super) struct A2aPeer {
    /// The peer agent's name (`a2a[].agent`).
    pub agent: Box<str>,
    pub address: ServerAddress,
    /// `a2a[AGENT]`.
    pub rule: Arc<str>,
}

/// `prices.MODEL`: USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
}

/// `budgets[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: Box<str>,
    pub limit: BudgetLimit,
    pub window: Duration,
    pub on_exhaust: OnExhaust,
    pub server: Option<Box<str>>,
    pub tool: Option<Box<str>>,
}

/// What a budget counts, and how much of it is allowed per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetLimit {
    Tokens(u64),
    Usd(f64),
    Calls(u64),
}

/// `approvals[]`.
#[derive(Debug, Clone)]
pub struct Approval {
    pub name: Box<str>,
    /// `approvals[NAME]`.
    pub rule: Arc<str>,
    pub when: Condition,
    pub users: Vec<Box<str>>,
    /// Distinct users needed, at most `users.len()`.
    pub required: usize,
    pub timeout: Duration,
}

/// `quarantine:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    pub triggers: Vec<QuarantineTrigger>,
    pub mode: QuarantineMode,
}

/// `denials` refusals within `within`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarantineTrigger {
    pub denials: u64,
    pub within: Duration,
}

/// A problem found after parsing: where (a path into the document) and what.
pub(super) type CompileError = (Vec<Seg<'static>>, String);

/// Builds one agent's policy; `line_of` says on which line a path's value
/// is (to point at the first of two duplicates).
pub(super) fn compile(
    file: &str,
    doc: PolicyDoc,
    line_of: &dyn Fn(&[Seg<'_>]) -> Option<usize>,
) -> Result<AgentPolicy, Vec<CompileError>> {
    let mut errors: Vec<CompileError> = Vec::new();
    let spec = doc.egress.unwrap_or_default();
    let tls = doc.tls.unwrap_or_default();
    // UDP entries are the kernel's (`udp_allow`); it cannot apply a deny
    // list or terminate TLS, and UDP is denied unless allowed anyway.
    for (section, field, entries) in [
        ("egress", "deny", &spec.deny),
        ("tls", "terminate", &tls.terminate),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            if entry.udp {
                errors.push((
                    vec![Seg::Key(section), Seg::Key(field), Seg::Index(i)],
                    format!(
                        "{:?}: udp:// entries belong in egress.allow only (UDP is denied unless \
                         an egress.allow entry allows it)",
                        entry.text
                    ),
                ));
            }
        }
    }
    let udp_allow: Vec<UdpAllow> = spec
        .allow
        .iter()
        .filter_map(EgressEntry::udp_allow)
        .collect();
    let mut ingress_ports: Vec<u16> = doc
        .ingress
        .map(|i| i.allow.into_iter().map(|p| p.0).collect())
        .unwrap_or_default();
    ingress_ports.sort_unstable();
    ingress_ports.dedup();
    let rules = |section: &str, entries: Vec<EgressEntry>| -> Vec<Rule> {
        entries
            .into_iter()
            .enumerate()
            .filter(|(_, entry)| !entry.udp)
            .map(|(i, entry)| Rule {
                name: format!("egress.{section}[{i}]").into(),
                entry,
            })
            .collect()
    };

    let mut duplicate =
        |section: &'static str, field: &'static str, names: Vec<&str>, what: &str| {
            let mut seen: Vec<(&str, usize)> = Vec::new();
            for (i, name) in names.iter().enumerate() {
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                    let first_path = [Seg::Key(section), Seg::Index(*first), Seg::Key(field)];
                    let at =
                        line_of(&first_path).map_or_else(String::new, |l| format!(" at line {l}"));
                    errors.push((
                        vec![Seg::Key(section), Seg::Index(i), Seg::Key(field)],
                        format!(
                            "{what} {name:?} is declared twice (first as {section}[{first}]{at}); \
                         {what} names must be unique within an agent's policy"
                        ),
                    ));
                } else {
                    seen.push((name, i));
                }
            }
        };
    if let Some(mcp) = &doc.mcp {
        duplicate(
            "mcp",
            "server",
            mcp.iter().map(|m| &*m.server.0).collect(),
            "mcp server",
        );
    }
    if let Some(a2a) = &doc.a2a {
        duplicate(
            "a2a",
            "agent",
            a2a.iter().map(|m| &*m.agent.0).collect(),
            "a2a agent",
        );
    }
    if let Some(budgets) = &doc.budgets {
        duplicate(
            "budgets",
            "name",
            budgets.iter().map(|b| &*b.name.0).collect(),
            "budget",
        );
    }
    if let Some(approvals) = &doc.approvals {
        duplicate(
            "approvals",
            "name",
            approvals.iter().map(|a| &*a.name.0).collect(),
            "approval",
        );
    }

    let mcp = doc
        .mcp
        .map(|servers| servers.into_iter().map(compile_mcp).collect());

    let llm = doc.llm.map(|endpoints| {
        let providers: Vec<Provider> = endpoints.iter().map(|e| e.provider).collect();
        endpoints
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let once = providers.iter().filter(|p| **p == e.provider).count() == 1;
                let rule = if once {
                    format!("llm[{}].models", e.provider.as_str())
                } else {
                    format!("llm[{i}].models")
                };
                LlmEndpoint {
                    provider: e.provider,
                    address: e.address,
                    models: e.models,
                    rule: rule.into(),
                    max_output_tokens: e.max_output_tokens.map(|n| n.0),
                }
            })
            .collect()
    });

    let a2a = doc.a2a.map(|peers| {
        peers
            .into_iter()
            .map(|p| A2aPeer {
                rule: format!("a2a[{}]", p.agent.0).into(),
                agent: p.agent.0,
                address: p.address,
            })
            .collect()
    });

    let prices = doc
        .prices
        .unwrap_or_default()
        .into_iter()
        .map(|(model, p)| {
            let price = Price {
                input: p.input.0,
                output: p.output.0,
                cached_input: p.cached_input.map(|u| u.0),
            };
            (model, price)
        })
        .collect();

    let mut budgets = Vec::new();
    for (i, b) in doc.budgets.unwrap_or_default().into_iter().enumerate() {
        let limit = match (b.limit.tokens, b.limit.usd, b.limit.calls) {
            (Some(t), None, None) => Some(BudgetLimit::Tokens(t.0)),
            (None, Some(u), None) => Some(BudgetLimit::Usd(u.0)),
            (None, None, Some(c)) => Some(BudgetLimit::Calls(c.0)),
            (tokens, usd, calls) => {
                let found: Vec<&str> = [
                    tokens.map(|_| "tokens"),
                    usd.map(|_| "usd"),
                    calls.map(|_| "calls"),
                ]
                .into_iter()
                .flatten()
                .collect();
                let found = if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(" and ")
                };
                errors.push((
                    vec![Seg::Key("budgets"), Seg::Index(i), Seg::Key("limit")],
                    format!(
                        "a budget limit needs exactly one of tokens, usd or calls; found {found}"
                    ),
                ));
                None
            }
        };
        if let Some(limit) = limit {
            budgets.push(Budget {
                name: b.name.0,
                limit,
                window: b.window.duration,
                on_exhaust: b.on_exhaust,
                server: b.server.map(Into::into),
                tool: b.tool.map(Into::into),
            });
        }
    }

    let mut approvals = Vec::new();
    for (i, a) in doc.approvals.unwrap_or_default().into_iter().enumerate() {
        let users: Vec<Box<str>> = a.approvers.users.into_iter().map(|u| u.0).collect();
        let mut seen = HashSet::new();
        for (j, user) in users.iter().enumerate() {
            if !seen.insert(user) {
                errors.push((
                    vec![
                        Seg::Key("approvals"),
                        Seg::Index(i),
                        Seg::Key("approvers"),
                        Seg::Key("users"),
                        Seg::Index(j),
                    ],
                    format!("approver {user:?} is listed twice; approvers must be distinct users"),
                ));
            }
        }
        let required = usize::try_from(a.approvers.required.0).unwrap_or(usize::MAX);
        if required > users.len() {
            errors.push((
                vec![
                    Seg::Key("approvals"),
                    Seg::Index(i),
                    Seg::Key("approvers"),
                    Seg::Key("required"),
                ],
                format!(
                    "required is {required} but {} user(s) are listed: expected at most the number of users",
                    users.len()
                ),
            ));
        }
        approvals.push(Approval {
            rule: format!("approvals[{}]", a.name.0).into(),
            name: a.name.0,
            when: a.when,
            users,
            required,
            timeout: a.timeout.duration,
        });
    }

    let quarantine = doc.quarantine.map(|q| Quarantine {
        triggers: q
            .triggers
            .into_iter()
            .map(|t| QuarantineTrigger {
                denials: t.denials.0,
                within: t.within.duration,
            })
            .collect(),
        mode: q.mode,
    });

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AgentPolicy {
        file: file.into(),
        default: spec.default,
        default_rule: RULE_EGRESS_DEFAULT.into(),
        allow: rules("allow", spec.allow),
        deny: rules("deny", spec.deny),
        udp_allow,
        ingress_ports,
        cgroup: doc.selector.map(|s| s.cgroup.0),
        terminate: tls.terminate,
        upstream_ca: tls.upstream_ca.map(Into::into),
        mcp,
        llm,
        a2a,
        mcp_undeclared: RULE_MCP_UNDECLARED.into(),
        llm_undeclared: RULE_LLM_UNDECLARED.into(),
        a2a_undeclared: RULE_A2A_UNDECLARED.into(),
        prices,
        budgets,
        approvals,
        quarantine,
    })
}

fn compile_mcp(spec: super::model::McpServerSpec) -> McpServer {
    let name = spec.server.0;
    let named = |list: Vec<Glob>, what: &str| -> Vec<NamedGlob> {
        list.into_iter()
            .enumerate()
            .map(|(i, glob)| NamedGlob {
                glob,
                rule: format!("mcp[{name}].tools.{what}[{i}]").into(),
            })
            .collect()
    };
    let tools = spec.tools;
    let classes = [
        named(tools.read, "read"),
        named(tools.write, "write"),
        named(tools.execute, "execute"),
    ];
    let deny = named(tools.deny, "deny");
    let mut granted = [false; 3];
    for class in spec.grant {
        granted[class_index(class)] = true;
    }
    let grant_rules =
        ToolClass::ALL.map(|c| Arc::from(format!("mcp[{name}].grant.{}", c.as_str())));
    let when = spec
        .when
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, Arc::from(format!("mcp[{name}].when[{i}]"))))
        .collect();
    McpServer {
        address: spec.address,
        trust_annotations: spec.trust_annotations,
        deny,
        classes,
        granted,
        grant_rules,
        grant_refused: format!("mcp[{name}].grant").into(),
        unknown: format!("mcp[{name}].tools.unknown").into(),
        resources: spec.resources.map(|r| r.allow),
        resources_rule: format!("mcp[{name}].resources.allow").into(),
        prompts: spec.prompts.map(|p| p.allow),
        prompts_rule: format!("mcp[{name}].prompts.allow").into(),
        when,
        entry_rule: format!("mcp[{name}]").into(),
        name,
    }
}
