//! Policy schema v1 as written in YAML (ARCHITECTURE.md section 5).
//!
//! The top level, `metadata`, `match` and `egress` are typed and reject
//! unknown keys. The other sections are accepted as YAML values until the
//! issue that enforces them types them. Every check that can fail runs in a
//! `Visitor` so that the error carries the value's line and column.

use super::egress::EgressEntry;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::fmt;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "mesh/v1";
/// The only `kind` this build understands.
pub const KIND: &str = "AgentPolicy";
/// Agent names become BPF map values and cgroup names: keep them short and plain.
pub const MAX_AGENT_NAME_LEN: usize = 56;

/// One YAML document of a policy file.
#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy mapping with apiVersion, kind and agent"
)]
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
    pub tls: Option<TlsSpec>,
    // Not enforced yet: accepted as YAML values, typed by a later issue.
    #[allow(dead_code)]
    pub mcp: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub llm: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub prices: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub budgets: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub approvals: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub quarantine: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a metadata mapping, e.g. { name: support-bot }"
)]
pub(crate) struct Metadata {
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// `match:` — which cgroups the daemon tags as this agent when they appear.
#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a match mapping, e.g. { cgroup: \"/system.slice/support-*.service\" }"
)]
pub(crate) struct Selector {
    pub cgroup: CgroupGlob,
}

/// `egress:` — where the agent may connect at all.
#[derive(Debug, Default, DeriveDeserialize)]
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

/// `tls:` — which destinations mesh-agent terminates TLS for (to see the
/// calls inside) instead of passing it through by SNI.
#[derive(Debug, Default, DeriveDeserialize)]
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, DeriveDeserialize)]
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

/// Deserializes a string and checks it inside the visitor (for the location).
fn checked_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        check: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, check })
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "the string \"mesh/v1\"", |v| {
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
        checked_str(d, "the string \"AgentPolicy\"", |v| {
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
        checked_str(d, "an agent name", |v| {
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
        checked_str(d, "a cgroup path glob", |v| {
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
