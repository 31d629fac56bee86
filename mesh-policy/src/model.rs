//! Policy schema v1 as written in YAML (ARCHITECTURE.md section 5).
//!
//! Every section is typed and rejects unknown keys. Every check on one value
//! runs in a `Visitor` so that the error carries the value's line and
//! column; checks that relate several values (duplicate names, one limit of
//! three, required approvers) run after parsing (`compile.rs`) and are
//! located with `yaml::locate`.

use super::condition::Condition;
use super::egress::EgressEntry;
use super::glob::Glob;
use super::values::{
    checked, EntryName, PolicyDuration, PositiveInt, ServerAddress, Usd, UserName,
};
use schemars::JsonSchema;
use serde::de::{Deserialize, Deserializer};
use serde::Deserialize as DeriveDeserialize;
use std::collections::BTreeMap;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "mesh/v1";
/// The only `kind` this build understands.
pub const KIND: &str = "AgentPolicy";
/// Agent names become BPF map values and cgroup names: keep them short and plain.
pub const MAX_AGENT_NAME_LEN: usize = 56;

/// One YAML document of a policy file.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy mapping with apiVersion, kind and agent"
)]
#[schemars(title = "mesh AgentPolicy (apiVersion mesh/v1)")]
pub(crate) struct PolicyDoc {
    #[serde(rename = "apiVersion")]
    #[allow(dead_code)] // checked while parsing
    pub api_version: ApiVersion,
    #[allow(dead_code)] // checked while parsing
    pub kind: Kind,
    #[allow(dead_code)] // informational
    pub metadata: Option<Metadata>,
    pub agent: AgentName,
    #[serde(rename = "match")]
    pub selector: Option<Selector>,
    pub egress: Option<EgressSpec>,
    /// Fixed ports the agent may bind on non-loopback addresses.
    pub ingress: Option<IngressSpec>,
    pub tls: Option<TlsSpec>,
    /// MCP servers this agent may call, and what on each. With this section
    /// (even empty) every other MCP server is refused (`mcp.undeclared`).
    pub mcp: Option<Vec<McpServerSpec>>,
    /// LLM endpoints and models. With this section other LLM endpoints are
    /// refused (`llm.undeclared`).
    pub llm: Option<Vec<LlmSpec>>,
    /// Agents this agent may message over A2A, by address. With this
    /// section other A2A addresses are refused (`a2a.undeclared`).
    pub a2a: Option<Vec<A2aSpec>>,
    /// USD per 1M tokens by model, for `usd` budgets.
    pub prices: Option<BTreeMap<String, PriceSpec>>,
    pub budgets: Option<Vec<BudgetSpec>>,
    pub approvals: Option<Vec<ApprovalSpec>>,
    pub quarantine: Option<QuarantineSpec>,
}

/// `mcp[]`: one MCP server and what the agent may do on it.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an mcp server mapping with server, address, tools and grant"
)]
pub(crate) struct McpServerSpec {
    /// Name of the server in rule names (`mcp[NAME]...`) and conditions.
    pub server: EntryName,
    pub address: ServerAddress,
    /// Classify tools no glob classifies by the server's own `tools/list`
    /// annotations (`readOnlyHint: true` is read, anything else write).
    #[serde(default)]
    pub trust_annotations: bool,
    #[serde(default)]
    pub tools: ToolsSpec,
    /// The classes this agent holds on this server.
    #[serde(default)]
    pub grant: Vec<ToolClass>,
    /// `resources/read` URIs allowed (absent: none).
    pub resources: Option<AllowList>,
    /// `prompts/get` names allowed (absent: none).
    pub prompts: Option<AllowList>,
    /// CEL conditions on every `tools/call`; all must hold.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `mcp[].tools`: tool globs by class, and denials (checked first).
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a tools mapping with read, write, execute and deny glob lists"
)]
pub(crate) struct ToolsSpec {
    #[serde(default)]
    pub read: Vec<Glob>,
    #[serde(default)]
    pub write: Vec<Glob>,
    #[serde(default)]
    pub execute: Vec<Glob>,
    #[serde(default)]
    pub deny: Vec<Glob>,
}

/// What a tool does, as far as grants are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DeriveDeserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    Read,
    Write,
    Execute,
}

impl ToolClass {
    pub const ALL: [ToolClass; 3] = [ToolClass::Read, ToolClass::Write, ToolClass::Execute];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolClass::Read => "read",
            ToolClass::Write => "write",
            ToolClass::Execute => "execute",
        }
    }
}

/// `{ allow: [glob] }`
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping { allow: [glob, ...] }")]
pub(crate) struct AllowList {
    #[serde(default)]
    pub allow: Vec<Glob>,
}

/// `llm[]`: an LLM endpoint and the models the agent may ask it for.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an llm mapping with provider, address and models"
)]
pub(crate) struct LlmSpec {
    pub provider: Provider,
    pub address: ServerAddress,
    #[serde(default)]
    pub models: Vec<Glob>,
    /// Output tokens reserved for a budgeted call whose request states no
    /// bound (`max_tokens` and kin); mesh then adds this bound to the
    /// request it forwards. Default 4096.
    pub max_output_tokens: Option<PositiveInt>,
}

/// Which API an LLM endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DeriveDeserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Openai,
    Anthropic,
}

impl Provider {
    /// As [`mesh_l7::llm::LlmApi::provider`] names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// `a2a[]`: an agent this agent may message.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an a2a mapping with agent and address"
)]
pub(crate) struct A2aSpec {
    pub agent: EntryName,
    pub address: ServerAddress,
}

/// `prices.MODEL`: USD per 1M tokens.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a price mapping { input: USD, output: USD, cached_input: USD } (per 1M tokens)"
)]
pub(crate) struct PriceSpec {
    pub input: Usd,
    pub output: Usd,
    pub cached_input: Option<Usd>,
}

/// `budgets[]`.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a budget mapping with name, limit, window and on_exhaust"
)]
pub(crate) struct BudgetSpec {
    pub name: EntryName,
    pub limit: LimitSpec,
    pub window: PolicyDuration,
    pub on_exhaust: OnExhaust,
    /// Only calls to this MCP server (an `mcp[].server` name) count.
    pub server: Option<String>,
    /// Only calls of this tool count.
    pub tool: Option<String>,
}

/// `budgets[].limit`: exactly one of the three (checked after parsing).
#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a limit mapping with exactly one of tokens, usd, calls"
)]
pub(crate) struct LimitSpec {
    pub tokens: Option<PositiveInt>,
    pub usd: Option<Usd>,
    pub calls: Option<PositiveInt>,
}

/// What happens when a budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DeriveDeserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExhaust {
    Halt,
    Quarantine,
    Escalate,
}

impl OnExhaust {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExhaust::Halt => "halt",
            OnExhaust::Quarantine => "quarantine",
            OnExhaust::Escalate => "escalate",
        }
    }
}

/// `approvals[]`.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an approval mapping with name, when, approvers and timeout"
)]
pub(crate) struct ApprovalSpec {
    pub name: EntryName,
    pub when: Condition,
    pub approvers: ApproversSpec,
    pub timeout: PolicyDuration,
}

/// `approvals[].approvers`: `required` distinct users of `users` (checked
/// after parsing: required <= number of users).
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an approvers mapping { users: [name, ...], required: N }"
)]
pub(crate) struct ApproversSpec {
    pub users: Vec<UserName>,
    pub required: PositiveInt,
}

/// `quarantine:`.
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a quarantine mapping with triggers and mode"
)]
pub(crate) struct QuarantineSpec {
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    #[serde(default)]
    pub mode: QuarantineMode,
}

/// `quarantine.triggers[]`: `denials` refusals within `within` quarantine the agent.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a trigger mapping { denials: N, within: DURATION }"
)]
pub(crate) struct TriggerSpec {
    pub denials: PositiveInt,
    pub within: PolicyDuration,
}

/// How a quarantined agent is stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, DeriveDeserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineMode {
    /// All its network traffic is refused.
    #[default]
    Isolate,
    /// Its processes are frozen (cgroup freezer).
    Freeze,
}

#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a metadata mapping, e.g. { name: support-bot }"
)]
pub(crate) struct Metadata {
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// `match:` — which cgroups the daemon tags as this agent when they appear.
#[derive(Debug, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a match mapping, e.g. { cgroup: \"/system.slice/support-*.service\" }"
)]
pub(crate) struct Selector {
    pub cgroup: CgroupGlob,
}

/// `egress:` — where the agent may connect at all.
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an egress mapping with default, allow and deny"
)]
pub(crate) struct EgressSpec {
    #[serde(default)]
    pub default: EgressDefault,
    #[serde(default)]
    pub allow: Vec<EgressEntry>,
    #[serde(default)]
    pub deny: Vec<EgressEntry>,
}

/// `ingress:` — which fixed ports the agent may listen on (bind) on
/// non-loopback addresses. Port 0 (an ephemeral port) and loopback
/// addresses need no entry; the mesh listen port is refused whatever this
/// says.
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "an ingress mapping { allow: [PORT, ...] }"
)]
pub(crate) struct IngressSpec {
    #[serde(default)]
    pub allow: Vec<Port>,
}

/// A port number, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number, 1-65535")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(Port(p)),
                    _ => Err(E::custom(format!(
                        "port {v} is out of range: expected a port number, 1-65535"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "port {v} is out of range: expected a port number, 1-65535"
                    ))),
                }
            }
        }
        d.deserialize_u64(V)
    }
}

impl JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 1, "maximum": 65535 })
    }
}

/// `tls:` — which destinations mesh-agent terminates TLS for (to see the
/// calls inside) instead of passing it through by SNI.
#[derive(Debug, Default, DeriveDeserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a tls mapping with terminate and upstream_ca"
)]
pub(crate) struct TlsSpec {
    /// Destinations (egress entry syntax: IP, CIDR, DNS name matched against
    /// the SNI, each with a port) whose TLS is terminated.
    #[serde(default)]
    pub terminate: Vec<EgressEntry>,
    /// A PEM file of CA certificates trusted for the upstream leg, in
    /// addition to the system roots.
    pub upstream_ca: Option<String>,
}

/// What happens to a destination no entry matches. Deny unless said otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, DeriveDeserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EgressDefault {
    #[default]
    Deny,
    Allow,
}

/// `apiVersion`, accepted only as [`API_VERSION`].
#[derive(Debug)]
pub(crate) struct ApiVersion;

/// `kind`, accepted only as [`KIND`].
#[derive(Debug)]
pub(crate) struct Kind;

/// A valid agent name (see [`valid_agent_name`]).
#[derive(Debug, Clone)]
pub(crate) struct AgentName(pub String);

/// A cgroup path glob relative to the cgroup root, starting with `/`.
#[derive(Debug, Clone)]
pub(crate) struct CgroupGlob(pub String);

/// 1..=56 bytes of `[A-Za-z0-9._-]`: safe as a cgroup directory name, in
/// metrics labels and in fixed-size kernel map values.
pub fn valid_agent_name(name: &str) -> bool {
    (1..=MAX_AGENT_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "the string \"mesh/v1\"", |v| {
            if v == API_VERSION {
                Ok(ApiVersion)
            } else {
                Err(format!(
                    "unsupported apiVersion {v:?}: expected {API_VERSION:?}"
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "the string \"AgentPolicy\"", |v| {
            if v == KIND {
                Ok(Kind)
            } else {
                Err(format!("unsupported kind {v:?}: expected {KIND:?}"))
            }
        })
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "an agent name", |v| {
            if valid_agent_name(v) {
                Ok(AgentName(v.to_owned()))
            } else {
                Err(format!(
                    "invalid agent name {v:?}: expected 1 to {MAX_AGENT_NAME_LEN} characters from A-Z a-z 0-9 . _ -"
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for CgroupGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a cgroup path glob", |v| {
            let bad = !v.starts_with('/') || v.split('/').any(|c| c == "..") || v.contains('\0');
            if bad {
                Err(format!(
                    "invalid cgroup selector {v:?}: expected an absolute glob below the cgroup root without \"..\", \
                     e.g. \"/system.slice/support-*.service\""
                ))
            } else {
                Ok(CgroupGlob(v.to_owned()))
            }
        })
    }
}

/// A string schema with a description and extra keywords (`pattern`, `const`).
pub(crate) fn string_schema(description: &str, extra: serde_json::Value) -> schemars::Schema {
    let mut schema = serde_json::json!({ "type": "string", "description": description });
    if let (Some(obj), serde_json::Value::Object(more)) = (schema.as_object_mut(), extra) {
        obj.extend(more);
    }
    match schemars::Schema::try_from(schema) {
        Ok(s) => s,
        // An object always converts; keep the plain string type otherwise.
        Err(_) => schemars::json_schema!({ "type": "string" }),
    }
}

macro_rules! string_schema_impl {
    ($ty:ty, $name:literal, $description:literal, $extra:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                string_schema($description, serde_json::json!($extra))
            }
        }
    };
}
pub(crate) use string_schema_impl;

string_schema_impl!(ApiVersion, "ApiVersion", "The schema version.", { "const": API_VERSION });
string_schema_impl!(Kind, "Kind", "The document kind.", { "const": KIND });
string_schema_impl!(
    AgentName,
    "AgentName",
    "The agent's name (at tag/exec time): 1 to 56 characters from A-Z a-z 0-9 . _ -",
    { "pattern": "^[A-Za-z0-9._-]{1,56}$" }
);
string_schema_impl!(
    CgroupGlob,
    "CgroupGlob",
    "A cgroup path glob relative to the cgroup root, e.g. /system.slice/support-*.service",
    { "pattern": "^/" }
);

impl JsonSchema for LimitSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LimitSpec".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let positive = generator.subschema_for::<PositiveInt>();
        let usd = generator.subschema_for::<Usd>();
        schemars::json_schema!({
            "type": "object",
            "description": "Exactly one of tokens, usd or calls.",
            "properties": { "tokens": positive, "usd": usd, "calls": positive },
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1
        })
    }
}
