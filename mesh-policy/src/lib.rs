//! Agent policies: loading YAML files (schema v1, ARCHITECTURE.md section 5)
//! into a compiled, immutable [`PolicySet`], and the egress decision the
//! proxy asks for every governed connection.
//!
//! Pure: no sockets, no BPF. `load_dir` is the only function that touches
//! the file system, and only to read the files.

mod annotations;
mod approvals;
mod budgets;
mod compile;
mod condition;
mod decide;
mod decision;
mod egress;
mod error;
mod explain;
mod glob;
mod model;
mod schema;
mod store;
mod values;
pub mod yaml;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_broken;
#[cfg(test)]
mod tests_decide;
#[cfg(test)]
mod tests_kernel;

pub use annotations::AnnotationStore;
pub use budgets::BudgetScope;
pub use compile::{
    Approval, Budget, BudgetLimit, Price, Quarantine, QuarantineTrigger, RULE_A2A_UNDECLARED,
    RULE_LLM_UNDECLARED, RULE_MCP_UNDECLARED,
};
pub use condition::Condition;
pub use decision::{CallContext, Decision, DecisionPoint, ListKind, ToolAnnotations};
pub use egress::UdpAllow;
pub use error::{PolicyError, PolicyErrors};
pub use explain::{ExplainQuery, Explanation};
pub use glob::path_glob_matches;
pub use model::{
    valid_agent_name, OnExhaust, Provider, QuarantineMode, ToolClass, API_VERSION, KIND,
    MAX_AGENT_NAME_LEN,
};
pub use schema::json_schema;
pub use store::PolicyStore;

use compile::AgentPolicy;
use egress::canonical_ip;
use model::{EgressDefault, PolicyDoc};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Rule name reported when the agent has no policy at all.
pub const RULE_NO_POLICY: &str = "no-policy";
/// Rule name reported when no entry matched and `egress.default` decided.
pub const RULE_EGRESS_DEFAULT: &str = "egress.default";

/// The verdict of [`EgressPolicy::decide_egress`]. `rule` names what decided
/// (for the audit record, metrics and the refusal sent to the agent); it is
/// shared, precomputed text so that an allow costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressDecision {
    Allow { rule: Arc<str> },
    Refuse { rule: Arc<str>, reason: String },
}

impl EgressDecision {
    pub fn is_allow(&self) -> bool {
        matches!(self, EgressDecision::Allow { .. })
    }

    pub fn rule(&self) -> &str {
        match self {
            EgressDecision::Allow { rule } | EgressDecision::Refuse { rule, .. } => rule,
        }
    }
}

/// The decision point the proxy calls for each connection (egress and TLS
/// mode); [`PolicySet`] implements it.
pub trait EgressPolicy: Send + Sync {
    /// `dst` is the original destination; `server_name` the TLS SNI or HTTP
    /// Host once known (name entries never match without one).
    fn decide_egress(
        &self,
        agent: &str,
        dst: SocketAddr,
        server_name: Option<&str>,
    ) -> EgressDecision;

    /// Whether TLS from `agent` to `dst` (SNI `server_name`) is terminated by
    /// the mesh or passed through untouched (the default).
    fn tls_mode(&self, agent: &str, dst: SocketAddr, server_name: Option<&str>) -> TlsMode {
        let _ = (agent, dst, server_name);
        TlsMode::Passthrough
    }
}

/// How the proxy treats a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Relay the bytes; the SNI is the name for egress decisions.
    Passthrough,
    /// Present a leaf from the mesh CA, parse the calls inside, and open TLS
    /// again to the destination, trusting the system roots and `upstream_ca`.
    Terminate { upstream_ca: Option<Arc<str>> },
}

/// All loaded policies, one per agent. Cheap to clone (shared, immutable):
/// a reload builds a new set and swaps it in, so a failed reload leaves the
/// one in force untouched.
///
/// The one mutable part is the [`AnnotationStore`] (what trusted servers
/// said of their tools): learned from traffic, it is carried from the set in
/// force to a reloaded one with [`PolicySet::with_annotations_from`].
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Looked up by `&str` per decision, without allocating.
    agents: Arc<HashMap<Box<str>, AgentPolicy>>,
    /// Agent names in order, for listing.
    names: Arc<[Box<str>]>,
    annotations: Arc<AnnotationStore>,
}

/// Where a policy came from, to name both places of a duplicate agent.
struct Origin {
    file: usize,
    doc: usize,
}

impl PolicySet {
    /// No policies: every agent is refused all egress.
    pub fn empty() -> PolicySet {
        PolicySet {
            agents: Arc::new(HashMap::new()),
            names: Arc::from(Vec::new()),
            annotations: Arc::new(AnnotationStore::new()),
        }
    }

    /// This set, sharing the tool annotations `previous` has learned
    /// (reload: `PolicySet::load_dir(dir)?.with_annotations_from(&in_force)`),
    /// so a reload does not forget how trusted servers classify their tools.
    pub fn with_annotations_from(mut self, previous: &PolicySet) -> PolicySet {
        self.annotations = previous.annotations.clone();
        self
    }

    /// What trusted servers said of their tools (shared with reloaded sets).
    pub fn annotations(&self) -> &Arc<AnnotationStore> {
        &self.annotations
    }

    /// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive, hidden
    /// files skipped, sorted by name) and reports the errors of all files.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        let whole = |message: String| {
            PolicyErrors(vec![PolicyError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                message,
            }])
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| whole(format!("cannot read policy directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| whole(format!("cannot read policy directory: {e}")))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_policy =
                !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"));
            // fs::metadata follows symlinks (ConfigMap mounts are symlinks).
            if is_policy && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for path in paths {
            let file = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((file, text)),
                Err(e) => errors.push(PolicyError {
                    file,
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match PolicySet::from_files(&files) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(more)) => {
                errors.extend(more);
                Err(PolicyErrors(errors))
            }
        }
    }

    /// Builds a set from `(display name, text)` pairs, in the given order.
    pub fn from_files(files: &[(String, String)]) -> Result<PolicySet, PolicyErrors> {
        let mut errors = Vec::new();
        let mut agents: BTreeMap<Box<str>, AgentPolicy> = BTreeMap::new();
        let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
        for (file_index, (file, text)) in files.iter().enumerate() {
            let mut documents = 0;
            for (doc_index, parsed) in yaml::documents::<PolicyDoc>(text) {
                let doc = match parsed {
                    Ok(Some(doc)) => doc,
                    Ok(None) => continue,
                    Err(e) => {
                        documents += 1;
                        errors.push(PolicyError {
                            file: file.clone(),
                            line: e.line,
                            column: e.column,
                            message: e.message,
                        });
                        continue;
                    }
                };
                documents += 1;
                let agent = doc.agent.0.clone();
                if let Some(first) = origins.get(&agent) {
                    let here = yaml::locate_key(text, doc_index, "agent").unwrap_or((1, 1));
                    let (first_file, first_text) = &files[first.file];
                    let there = yaml::locate_key(first_text, first.doc, "agent").unwrap_or((1, 1));
                    errors.push(PolicyError {
                        file: file.clone(),
                        line: here.0,
                        column: here.1,
                        message: format!(
                            "agent {agent:?} already has a policy at {first_file}:{}:{}; one agent, one policy",
                            there.0, there.1
                        ),
                    });
                    continue;
                }
                origins.insert(
                    agent.clone(),
                    Origin {
                        file: file_index,
                        doc: doc_index,
                    },
                );
                let line_of =
                    |path: &[yaml::Seg<'_>]| yaml::locate(text, doc_index, path).map(|(l, _)| l);
                match compile::compile(file, doc, &line_of) {
                    Ok(policy) => {
                        agents.insert(agent.into(), policy);
                    }
                    Err(problems) => {
                        for (path, message) in problems {
                            let (line, column) =
                                yaml::locate(text, doc_index, &path).unwrap_or((1, 1));
                            errors.push(PolicyError {
                                file: file.clone(),
                                line,
                                column,
                                message,
                            });
                        }
                    }
                }
            }
            if documents == 0 {
                errors.push(PolicyError {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                    message:
                        "no policy in this file: expected a mapping with apiVersion, kind and agent"
                            .into(),
                });
            }
        }
        if errors.is_empty() {
            let names: Vec<Box<str>> = agents.keys().cloned().collect();
            Ok(PolicySet {
                agents: Arc::new(agents.into_iter().collect()),
                names: names.into(),
                annotations: Arc::new(AnnotationStore::new()),
            })
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// Agents that have a policy, in name order.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    pub fn has_agent(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    /// `budgets` of `agent`'s policy (empty without a policy).
    pub fn budgets(&self, agent: &str) -> &[Budget] {
        self.agents.get(agent).map_or(&[], |p| &p.budgets)
    }

    /// `prices` of `agent`'s policy, by model.
    pub fn prices(&self, agent: &str) -> Option<&BTreeMap<String, Price>> {
        self.agents.get(agent).map(|p| &p.prices)
    }

    /// `approvals` of `agent`'s policy.
    pub fn approvals(&self, agent: &str) -> &[Approval] {
        self.agents.get(agent).map_or(&[], |p| &p.approvals)
    }

    /// The `udp://` entries of `agent`'s `egress.allow`: where the kernel
    /// lets it send UDP (nowhere without a policy or such entries).
    pub fn udp_allow(&self, agent: &str) -> &[UdpAllow] {
        self.agents.get(agent).map_or(&[], |p| &p.udp_allow)
    }

    /// `ingress.allow` of `agent`'s policy: the fixed ports it may bind on
    /// non-loopback addresses, sorted.
    pub fn ingress_ports(&self, agent: &str) -> &[u16] {
        self.agents.get(agent).map_or(&[], |p| &p.ingress_ports)
    }

    /// `quarantine` of `agent`'s policy, if it has the section.
    pub fn quarantine(&self, agent: &str) -> Option<&Quarantine> {
        self.agents.get(agent).and_then(|p| p.quarantine.as_ref())
    }

    /// Whether `agent`'s policy governs calls to `dst` above TCP: an `mcp`,
    /// `llm` or `a2a` entry, or a `tls.terminate` entry, that a connection to
    /// `dst` may be for. A named entry counts when `server_name` (the SNI)
    /// is that name, or is not known yet. Such a connection must be read as
    /// the protocol it is, never relayed as opaque bytes. The answer names
    /// the entry (for reasons) without allocating.
    pub fn l7_entry_for(
        &self,
        agent: &str,
        dst: SocketAddr,
        server_name: Option<&str>,
    ) -> Option<L7Entry<'_>> {
        let policy = self.agents.get(agent)?;
        let dst = SocketAddr::new(canonical_ip(dst.ip()), dst.port());
        let mcp = policy.mcp.iter().flatten().map(|s| &s.address);
        let llm = policy.llm.iter().flatten().map(|l| &l.address);
        let a2a = policy.a2a.iter().flatten().map(|p| &p.address);
        if let Some(a) = mcp
            .chain(llm)
            .chain(a2a)
            .find(|a| a.may_be(dst, server_name))
        {
            return Some(L7Entry {
                what: "address",
                text: &a.text,
                file: &policy.file,
            });
        }
        policy
            .terminate
            .iter()
            .find(|e| e.may_match(dst.ip(), dst.port(), server_name))
            .map(|e| L7Entry {
                what: "tls.terminate",
                text: &e.text,
                file: &policy.file,
            })
    }

    /// Whether `server_name` (an SNI or Host the agent sent) would let
    /// `agent` through egress on `port` by name: an `egress.allow` name entry
    /// matches it. Such a name must be bound to the address connected to
    /// before it may decide (the proxy checks, `names.rs`).
    pub fn name_allows(&self, agent: &str, server_name: &str, port: u16) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|p| p.allow.iter().any(|r| r.entry.names(server_name, port)))
    }

    /// `(agent, glob)` for every policy with a `match.cgroup` selector: the
    /// daemon tags cgroups matching `glob` (relative to the cgroup root) as `agent`.
    pub fn cgroup_selectors(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .filter_map(|agent| {
                let p = self.agents.get(agent)?;
                p.cgroup.as_ref().map(|g| (agent.to_string(), g.clone()))
            })
            .collect()
    }
}

/// The policy entry that governs a destination above TCP
/// ([`PolicySet::l7_entry_for`]); displays as `address "…" (file)`.
#[derive(Clone, Copy, Debug)]
pub struct L7Entry<'p> {
    what: &'static str,
    text: &'p str,
    file: &'p str,
}

impl std::fmt::Display for L7Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} ({})", self.what, self.text, self.file)
    }
}

impl Default for PolicySet {
    fn default() -> Self {
        PolicySet::empty()
    }
}

impl EgressPolicy for PolicySet {
    fn tls_mode(&self, agent: &str, dst: SocketAddr, server_name: Option<&str>) -> TlsMode {
        let Some(policy) = self.agents.get(agent) else {
            return TlsMode::Passthrough;
        };
        let ip = canonical_ip(dst.ip());
        if policy
            .terminate
            .iter()
            .any(|e| e.matches(ip, dst.port(), server_name))
        {
            TlsMode::Terminate {
                upstream_ca: policy.upstream_ca.clone(),
            }
        } else {
            TlsMode::Passthrough
        }
    }

    fn decide_egress(
        &self,
        agent: &str,
        dst: SocketAddr,
        server_name: Option<&str>,
    ) -> EgressDecision {
        let Some(policy) = self.agents.get(agent) else {
            return EgressDecision::Refuse {
                rule: RULE_NO_POLICY.into(),
                reason: format!("agent {agent} has no policy: all egress is denied"),
            };
        };
        let ip = canonical_ip(dst.ip());
        let port = dst.port();
        // Deny wins over allow, whatever the order in the file.
        if let Some(rule) = policy
            .deny
            .iter()
            .find(|r| r.entry.matches(ip, port, server_name))
        {
            return EgressDecision::Refuse {
                rule: rule.name.clone(),
                reason: format!(
                    "egress to {} is denied by {} {:?} ({})",
                    describe(ip, port, server_name),
                    rule.name,
                    rule.entry.text,
                    policy.file
                ),
            };
        }
        if let Some(rule) = policy
            .allow
            .iter()
            .find(|r| r.entry.matches(ip, port, server_name))
        {
            return EgressDecision::Allow {
                rule: rule.name.clone(),
            };
        }
        match policy.default {
            EgressDefault::Allow => EgressDecision::Allow {
                rule: policy.default_rule.clone(),
            },
            EgressDefault::Deny => EgressDecision::Refuse {
                rule: policy.default_rule.clone(),
                reason: format!(
                    "no egress.allow entry of agent {agent} matches {}; the default is deny ({})",
                    describe(ip, port, server_name),
                    policy.file
                ),
            },
        }
    }
}

/// `1.2.3.4:443` or `1.2.3.4:443 (server name api.example)`, for reasons.
fn describe(ip: std::net::IpAddr, port: u16, server_name: Option<&str>) -> String {
    let addr = SocketAddr::new(ip, port);
    match server_name {
        Some(name) => format!("{addr} (server name {name:?})"),
        None => addr.to_string(),
    }
}
