//! Small validated values of the policy schema: server addresses, names,
//! durations, counts and amounts. Each checks its input inside a `Visitor`
//! so that an error carries the value's line and column (see `yaml.rs`).

use super::egress::{canonical_ip, parse_name, parse_port, NameMatch};
use super::model::{string_schema, string_schema_impl};
use schemars::JsonSchema;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Deserializes a string and checks it inside the visitor (for the location).
pub(crate) fn checked<'de, D, T>(
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

/// Where an MCP server, LLM endpoint or A2A agent is: `host:port[/path]`,
/// host an IPv4 address, `[IPv6]` or a DNS name (matched against the SNI or
/// Host the agent sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerAddress {
    /// As written, for reasons and explanations.
    pub text: Box<str>,
    pub host: Host,
    pub port: u16,
    /// Request path prefix, without a trailing `/` (`None`: any path).
    pub path: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// Canonical (v4-mapped IPv6 folded into IPv4).
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(Box<str>),
}

impl ServerAddress {
    pub fn parse(text: &str) -> Result<ServerAddress, String> {
        if text.is_empty() {
            return Err("empty address; expected host:port[/path]".into());
        }
        if text.trim() != text {
            return Err("leading or trailing whitespace".into());
        }
        // The path starts at the first '/' (no '/' can occur in a host or port).
        let (authority, path) = match text.find('/') {
            Some(at) => (&text[..at], Some(&text[at..])),
            None => (text, None),
        };
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err("missing ']' after the IPv6 address".into());
            };
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("invalid IPv6 address {inner:?}"))?;
            let Some(port) = after.strip_prefix(':') else {
                return Err("missing :PORT after the IPv6 address".into());
            };
            (Host::Ip(canonical_ip(IpAddr::V6(ip))), port)
        } else {
            let mut parts = authority.split(':');
            let (Some(host), Some(port), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(if authority.matches(':').count() > 1 {
                    "IPv6 addresses must be written in brackets, e.g. \"[::1]:443\"".into()
                } else {
                    "missing :PORT; expected host:port[/path], e.g. \"127.0.0.2:7001/mcp\"".into()
                });
            };
            if host.is_empty() {
                return Err("missing host before ':'".into());
            }
            let host =
                if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    let ip: Ipv4Addr = host
                        .parse()
                        .map_err(|_| format!("invalid IPv4 address {host:?}"))?;
                    Host::Ip(IpAddr::V4(ip))
                } else {
                    match parse_name(host)? {
                        NameMatch::Exact(name) => Host::Name(name),
                        NameMatch::Suffix(_) => return Err(
                            "a server address names one host; wildcards belong in egress entries"
                                .into(),
                        ),
                    }
                };
            (host, port)
        };
        let port =
            parse_port(port).map_err(|e| e.replace(", a range such as 8000-8099, or *", ""))?;
        let path = match path {
            None => None,
            Some(p) if p.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                return Err(format!(
                    "path {p:?} contains whitespace or control characters"
                ))
            }
            Some(p) if p.contains(['?', '#']) => {
                return Err(format!("path {p:?} must not contain a query or fragment"))
            }
            Some(p) => {
                let trimmed = p.trim_end_matches('/');
                (!trimmed.is_empty()).then(|| trimmed.into())
            }
        };
        Ok(ServerAddress {
            text: text.into(),
            host,
            port,
            path,
        })
    }

    /// Whether a request to `dst` (canonical IP), sent with `server_name`
    /// (SNI or Host) for `request_path`, is for this address. The path must
    /// be the prefix or start with it followed by `/` (so `/mcp` is not
    /// `/mcp-admin`).
    pub fn matches(&self, dst: SocketAddr, server_name: Option<&str>, request_path: &str) -> bool {
        if dst.port() != self.port {
            return false;
        }
        let host = match &self.host {
            Host::Ip(ip) => *ip == dst.ip(),
            Host::Name(name) => server_name
                .is_some_and(|s| s.strip_suffix('.').unwrap_or(s).eq_ignore_ascii_case(name)),
        };
        host && self.path_matches(request_path)
    }

    /// Whether a connection to `dst` (canonical IP) may be for this address
    /// before its requests were read: same port, and the same IP, or this
    /// name as `server_name` (the SNI), or any name while none is known.
    pub fn may_be(&self, dst: SocketAddr, server_name: Option<&str>) -> bool {
        dst.port() == self.port
            && match &self.host {
                Host::Ip(ip) => *ip == dst.ip(),
                Host::Name(name) => server_name
                    .is_none_or(|s| s.strip_suffix('.').unwrap_or(s).eq_ignore_ascii_case(name)),
            }
    }

    fn path_matches(&self, request_path: &str) -> bool {
        let Some(prefix) = &self.path else {
            return true;
        };
        let path = request_path
            .split(['?', '#'])
            .next()
            .unwrap_or(request_path);
        match path.strip_prefix(&**prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "a server address host:port[/path], e.g. \"127.0.0.2:7001/mcp\"",
            |v| ServerAddress::parse(v).map_err(|why| format!("invalid address {v:?}: {why}")),
        )
    }
}

string_schema_impl!(
    ServerAddress,
    "ServerAddress",
    "host:port[/path]: host an IPv4 address, [IPv6] or a DNS name (matched against the SNI or Host)",
    { "pattern": "^(\\[[0-9A-Fa-f:.]+\\]|[^:/\\[\\]*]+):[0-9]{1,5}(/.*)?$" }
);

/// The longest name of an `mcp[].server`, `a2a[].agent`, budget or approval.
pub const MAX_ENTRY_NAME_LEN: usize = 64;

/// A name used in rule names (`mcp[NAME]`) and metrics: plain characters only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryName(pub Box<str>);

impl<'de> Deserialize<'de> for EntryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a name", |v| {
            let ok = (1..=MAX_ENTRY_NAME_LEN).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if ok {
                Ok(EntryName(v.into()))
            } else {
                Err(format!(
                    "invalid name {v:?}: expected 1 to {MAX_ENTRY_NAME_LEN} characters from A-Z a-z 0-9 . _ -"
                ))
            }
        })
    }
}

string_schema_impl!(
    EntryName,
    "EntryName",
    "A name: 1 to 64 characters from A-Z a-z 0-9 . _ -",
    { "pattern": "^[A-Za-z0-9._-]{1,64}$" }
);

/// A Unix user name (approvers are the users that call meshctl).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserName(pub Box<str>);

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a Unix user name", |v| {
            let ok = (1..=32).contains(&v.len())
                && !v.starts_with('-')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if ok {
                Ok(UserName(v.into()))
            } else {
                Err(format!(
                    "invalid user name {v:?}: expected a Unix user name (1 to 32 characters from \
                     A-Z a-z 0-9 . _ -, not starting with -)"
                ))
            }
        })
    }
}

string_schema_impl!(
    UserName,
    "UserName",
    "A Unix user name",
    { "pattern": "^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$" }
);

/// Shortest and longest budget window, approval timeout or trigger window.
pub const MIN_DURATION: Duration = Duration::from_secs(60);
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// `90s`, `15m`, `24h`, `7d`: a whole number and a unit, from 1m to 30d.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyDuration {
    pub text: Box<str>,
    pub duration: Duration,
}

impl PolicyDuration {
    pub fn parse(text: &str) -> Result<PolicyDuration, String> {
        let expected = "expected a whole number followed by s, m, h or d, from 1m to 30d, \
                        e.g. \"90s\", \"15m\", \"24h\", \"7d\"";
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let scale: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("invalid duration {text:?}: {expected}")),
        };
        let seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| format!("invalid duration {text:?}: {expected}"))?;
        let duration = Duration::from_secs(seconds);
        if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
            return Err(format!(
                "duration {text:?} is out of range: expected 1m to 30d"
            ));
        }
        Ok(PolicyDuration {
            text: text.into(),
            duration,
        })
    }
}

impl<'de> Deserialize<'de> for PolicyDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "a duration string such as \"90s\", \"15m\", \"24h\" or \"7d\"",
            PolicyDuration::parse,
        )
    }
}

string_schema_impl!(
    PolicyDuration,
    "Duration",
    "A whole number and a unit (s, m, h, d), from 1m to 30d, e.g. 90s, 15m, 24h, 7d",
    { "pattern": "^[0-9]+[smhd]$" }
);

/// A whole number, 1 or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PositiveInt(pub u64);

impl<'de> Deserialize<'de> for PositiveInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PositiveInt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number, 1 or more")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PositiveInt, E> {
                if v == 0 {
                    Err(E::custom(
                        "0 is not allowed here: expected a whole number, 1 or more",
                    ))
                } else {
                    Ok(PositiveInt(v))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PositiveInt, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v} is negative: expected a whole number, 1 or more"
                    ))),
                }
            }
        }
        d.deserialize_u64(V)
    }
}

impl JsonSchema for PositiveInt {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PositiveInt".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 1 })
    }
}

/// An amount of US dollars: a finite number, 0 or more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usd(pub f64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount in USD, a number 0 or more")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Usd, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Usd(v))
                } else {
                    Err(E::custom(format!(
                        "{v} is not a valid amount: expected a number in USD, 0 or more"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                Ok(Usd(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_f64(V)
    }
}

impl JsonSchema for Usd {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Usd".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "number", "minimum": 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn server_address_forms_and_matching() {
        let a = ServerAddress::parse("127.0.0.2:7001/mcp/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.path.as_deref(), Some("/mcp"));
        assert!(a.matches(addr("127.0.0.2:7001"), None, "/mcp"));
        assert!(a.matches(addr("127.0.0.2:7001"), None, "/mcp/x?y=1"));
        assert!(a.matches(addr("127.0.0.2:7001"), None, "/mcp?session=1"));
        assert!(!a.matches(addr("127.0.0.2:7001"), None, "/mcp-admin"));
        assert!(!a.matches(addr("127.0.0.2:7001"), None, "/"));
        assert!(!a.matches(addr("127.0.0.2:7002"), None, "/mcp"));
        let v6 = ServerAddress::parse("[::1]:9000").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.matches(addr("[::1]:9000"), None, "/anything"));
        let mapped = ServerAddress::parse("[::ffff:127.0.0.2]:1").unwrap_or_else(|e| panic!("{e}"));
        assert!(mapped.matches(addr("127.0.0.2:1"), None, "/"));
        let name = ServerAddress::parse("Tools.Test:443").unwrap_or_else(|e| panic!("{e}"));
        assert!(name.matches(addr("127.0.0.2:443"), Some("tools.test."), "/"));
        assert!(!name.matches(addr("127.0.0.2:443"), None, "/"));
        assert!(!name.matches(addr("127.0.0.2:443"), Some("other.test"), "/"));
    }

    #[test]
    fn server_address_errors() {
        let err = |s: &str| ServerAddress::parse(s).err().unwrap_or_default();
        assert_eq!(
            err("127.0.0.2"),
            "missing :PORT; expected host:port[/path], e.g. \"127.0.0.2:7001/mcp\""
        );
        assert_eq!(
            err("::1:80"),
            "IPv6 addresses must be written in brackets, e.g. \"[::1]:443\""
        );
        assert_eq!(err("[::1]"), "missing :PORT after the IPv6 address");
        assert_eq!(err("1.2.3.4:0"), "port 0 is out of range (1-65535)");
        assert_eq!(
            err("1.2.3.4:x"),
            "invalid port \"x\"; expected a number 1-65535"
        );
        assert_eq!(
            err("*.corp.example:443"),
            "a server address names one host; wildcards belong in egress entries"
        );
        assert_eq!(
            err("a:1/m?x"),
            "path \"/m?x\" must not contain a query or fragment"
        );
    }

    #[test]
    fn durations() {
        let secs = |s: &str| PolicyDuration::parse(s).map(|d| d.duration.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("1m"), Ok(60));
        assert_eq!(secs("24h"), Ok(86400));
        assert_eq!(secs("30d"), Ok(30 * 86400));
        assert_eq!(
            secs("59s"),
            Err("duration \"59s\" is out of range: expected 1m to 30d".into())
        );
        assert_eq!(
            secs("31d"),
            Err("duration \"31d\" is out of range: expected 1m to 30d".into())
        );
        for bad in ["", "m", "1.5h", "10", "1w", " 1m", "99999999999999999999d"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
    }
}
