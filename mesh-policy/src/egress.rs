//! Egress entries (`ADDR[:PORT]`, `udp://ADDR[:PORT]`) and their matching:
//! the L4/SNI question "may this agent reach this destination at all?".
//!
//! An entry without a scheme is TCP. A `udp://` entry is decided by the
//! kernel alone, per datagram, so it takes an IP address or CIDR (never a
//! name: nothing could resolve it there) and one port or `*` (the kernel
//! looks ports up exactly); see [`UdpAllow`].
//!
//! Entries are parsed once at load time into integer masks and port ranges,
//! so that a decision is a few comparisons and never allocates.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an entry says about the destination address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddrMatch {
    /// `*`: any address and any name.
    Any,
    /// IPv4 address or CIDR, as network bits and mask.
    V4 { net: u32, mask: u32 },
    /// IPv6 address or CIDR (never v4-mapped: those are folded into `V4`).
    V6 { net: u128, mask: u128 },
    /// A DNS name; matched against the TLS SNI / HTTP Host, never the IP.
    Name(NameMatch),
}

/// A DNS name pattern, kept lower case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameMatch {
    /// `api.openai.com`
    Exact(Box<str>),
    /// `*.corp.example`, stored as `.corp.example`: one or more labels before
    /// the suffix, never the bare `corp.example`.
    Suffix(Box<str>),
}

impl NameMatch {
    pub(crate) fn matches(&self, server_name: &str) -> bool {
        let name = server_name
            .strip_suffix('.')
            .unwrap_or(server_name)
            .as_bytes();
        match self {
            NameMatch::Exact(n) => name.eq_ignore_ascii_case(n.as_bytes()),
            NameMatch::Suffix(s) => {
                let s = s.as_bytes();
                name.len() > s.len() && name[name.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// Inclusive port range; `*` or an omitted port is `1..=65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortMatch {
    pub lo: u16,
    pub hi: u16,
}

impl PortMatch {
    pub const ANY: PortMatch = PortMatch {
        lo: 0,
        hi: u16::MAX,
    };

    fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// One parsed entry of `egress.allow` / `egress.deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EgressEntry {
    /// The entry as written, for rule names and messages.
    pub text: String,
    pub addr: AddrMatch,
    pub ports: PortMatch,
    /// Written `udp://...`: UDP, decided in the kernel. Otherwise TCP.
    pub udp: bool,
}

/// The scheme of UDP entries.
const UDP_SCHEME: &str = "udp://";

/// A UDP destination an agent may send to, as the kernel matches it: an
/// address prefix over the 128-bit form in which the kernel sees every
/// address (IPv4 IPv4-mapped, so `10.0.0.0/8` is `::ffff:10.0.0.0/104`, and
/// `*` or `[::/0]` covers IPv4 too), and a port (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdpAllow {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    pub port: Option<u16>,
}

impl EgressEntry {
    /// Parses `ADDR[:PORT]` or `udp://ADDR[:PORT]`; the error explains what
    /// was expected.
    pub fn parse(text: &str) -> Result<EgressEntry, String> {
        let (udp, rest) = match text.split_once("://") {
            Some((_, rest)) if text.starts_with(UDP_SCHEME) => (true, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "unknown scheme {scheme:?}; the only scheme is udp:// (an entry without one is TCP)"
                ))
            }
            None => (false, text),
        };
        let (addr, ports) = parse_entry(rest)?;
        if udp {
            if matches!(addr, AddrMatch::Name(_)) {
                return Err(
                    "a udp:// entry takes an IP address or CIDR, not a name: the kernel decides \
                     each datagram alone and cannot resolve names (name the resolver or server \
                     by address, e.g. \"udp://127.0.0.53:53\")"
                        .into(),
                );
            }
            if ports != PortMatch::ANY && ports.lo != ports.hi {
                return Err("a udp:// entry takes one port or *, not a range".into());
            }
        }
        Ok(EgressEntry {
            text: text.to_owned(),
            addr,
            ports,
            udp,
        })
    }

    /// The kernel's form of a `udp://` entry (`None` for TCP entries).
    pub fn udp_allow(&self) -> Option<UdpAllow> {
        if !self.udp {
            return None;
        }
        let port = (self.ports != PortMatch::ANY).then_some(self.ports.lo);
        let (addr, prefix_len) = match self.addr {
            AddrMatch::Any => (Ipv6Addr::UNSPECIFIED, 0),
            AddrMatch::V4 { net, mask } => (
                Ipv4Addr::from(net).to_ipv6_mapped(),
                96 + mask.count_ones() as u8,
            ),
            AddrMatch::V6 { net, mask } => (Ipv6Addr::from(net), mask.count_ones() as u8),
            AddrMatch::Name(_) => return None,
        };
        Some(UdpAllow {
            addr,
            prefix_len,
            port,
        })
    }

    /// `ip` must already be canonical (v4-mapped IPv6 turned into IPv4).
    /// Name entries match only when a server name is known.
    pub fn matches(&self, ip: IpAddr, port: u16, server_name: Option<&str>) -> bool {
        if !self.ports.contains(port) {
            return false;
        }
        match (&self.addr, ip) {
            (AddrMatch::Any, _) => true,
            (AddrMatch::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (AddrMatch::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            (AddrMatch::Name(n), _) => server_name.is_some_and(|s| n.matches(s)),
            _ => false,
        }
    }
}

impl EgressEntry {
    /// Whether this is a name entry that `server_name` matches on `port`.
    pub fn names(&self, server_name: &str, port: u16) -> bool {
        matches!(&self.addr, AddrMatch::Name(n) if n.matches(server_name))
            && self.ports.contains(port)
    }

    /// [`EgressEntry::matches`], where a name entry also matches while no
    /// name is known (it may turn out to be that name).
    pub fn may_match(&self, ip: IpAddr, port: u16, server_name: Option<&str>) -> bool {
        match (&self.addr, server_name) {
            (AddrMatch::Name(_), None) => self.ports.contains(port),
            _ => self.matches(ip, port, server_name),
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as seen by a dual-stack socket) is the
/// IPv4 peer it stands for, so IPv4 rules must apply to it.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

impl<'de> Deserialize<'de> for EgressEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Validation runs inside the visitor so that the YAML crate attaches
        // the entry's own line and column to the error.
        struct V;
        impl Visitor<'_> for V {
            type Value = EgressEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an egress entry string ADDR[:PORT] or udp://ADDR[:PORT], e.g. \"10.0.0.0/8:5432\"",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EgressEntry, E> {
                EgressEntry::parse(v)
                    .map_err(|why| E::custom(format!("invalid egress entry {v:?}: {why}")))
            }
        }
        d.deserialize_str(V)
    }
}

impl schemars::JsonSchema for EgressEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EgressEntry".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        super::model::string_schema(
            "ADDR[:PORT] (TCP) or udp://ADDR[:PORT] (UDP): ADDR an IPv4 address or CIDR, [IPv6] \
             or [IPv6/len], *, or (TCP only) a DNS name or *.name; PORT a number, (TCP only) a \
             range (8000-8099), or *",
            serde_json::json!({ "minLength": 1 }),
        )
    }
}

fn parse_entry(text: &str) -> Result<(AddrMatch, PortMatch), String> {
    if text.is_empty() {
        return Err("empty entry; expected ADDR[:PORT], e.g. \"10.0.0.0/8:5432\"".into());
    }
    if text.trim() != text {
        return Err("leading or trailing whitespace".into());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err("missing ']' after the IPv6 address".into());
        };
        let addr = parse_v6(inner)?;
        let ports = if after.is_empty() {
            PortMatch::ANY
        } else if let Some(p) = after.strip_prefix(':') {
            parse_ports(p)?
        } else {
            return Err(format!("unexpected {after:?} after ']'; expected :PORT"));
        };
        return Ok((addr, ports));
    }
    let (addr, ports) =
        match text.matches(':').count() {
            0 => (text, PortMatch::ANY),
            1 => match text.split_once(':') {
                Some((a, p)) => (a, parse_ports(p)?),
                None => (text, PortMatch::ANY),
            },
            _ => return Err(
                "IPv6 addresses must be written in brackets, e.g. \"[::1]:443\" or \"[fd00::/8]\""
                    .into(),
            ),
        };
    Ok((parse_addr(addr)?, ports))
}

fn parse_addr(addr: &str) -> Result<AddrMatch, String> {
    if addr == "*" {
        return Ok(AddrMatch::Any);
    }
    if addr.is_empty() {
        return Err("missing address before ':'".into());
    }
    if let Some((ip, len)) = addr.split_once('/') {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("invalid IPv4 address {ip:?} in CIDR"))?;
        let len = parse_prefix_len(len, 32, "IPv4")?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let bits = u32::from(ip);
        if bits & !mask != 0 {
            let net = Ipv4Addr::from(bits & mask);
            return Err(format!(
                "host bits are set in {addr}; did you mean {net}/{len}?"
            ));
        }
        return Ok(AddrMatch::V4 { net: bits, mask });
    }
    if addr.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("invalid IPv4 address {addr:?}"))?;
        return Ok(AddrMatch::V4 {
            net: u32::from(ip),
            mask: u32::MAX,
        });
    }
    parse_name(addr).map(AddrMatch::Name)
}

fn parse_v6(inner: &str) -> Result<AddrMatch, String> {
    let (ip, len) = match inner.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (inner, None),
    };
    if ip.contains('%') {
        return Err("IPv6 zone ids (%...) are not supported".into());
    }
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| format!("invalid IPv6 address {ip:?}"))?;
    let len = match len {
        Some(len) => parse_prefix_len(len, 128, "IPv6")?,
        None => 128,
    };
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    let bits = u128::from(ip);
    if bits & !mask != 0 {
        let net = Ipv6Addr::from(bits & mask);
        return Err(format!(
            "host bits are set in {inner}; did you mean [{net}/{len}]?"
        ));
    }
    // A v4-mapped rule ([::ffff:10.0.0.0/104]) is an IPv4 rule: destinations
    // are canonicalised to IPv4 before matching.
    if len >= 96 {
        if let Some(v4) = ip.to_ipv4_mapped() {
            let len4 = len - 96;
            let mask = if len4 == 0 {
                0
            } else {
                u32::MAX << (32 - len4)
            };
            return Ok(AddrMatch::V4 {
                net: u32::from(v4),
                mask,
            });
        }
    }
    Ok(AddrMatch::V6 { net: bits, mask })
}

fn parse_prefix_len(len: &str, max: u32, family: &str) -> Result<u32, String> {
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid prefix length {len:?}; expected a number 0-{max}"
        ));
    }
    match len.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "prefix length {len} is out of range for {family} (0-{max})"
        )),
    }
}

fn parse_ports(p: &str) -> Result<PortMatch, String> {
    if p.is_empty() {
        return Err(
            "missing port after ':'; expected a number 1-65535, a range such as 8000-8099, or *"
                .into(),
        );
    }
    if p == "*" {
        return Ok(PortMatch::ANY);
    }
    if let Some((lo, hi)) = p.split_once('-') {
        let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
        if lo > hi {
            return Err(format!(
                "port range {p} is empty (start is greater than end)"
            ));
        }
        return Ok(PortMatch { lo, hi });
    }
    let port = parse_port(p)?;
    Ok(PortMatch { lo: port, hi: port })
}

pub(crate) fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid port {p:?}; expected a number 1-65535, a range such as 8000-8099, or *"
        ));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => {
            u16::try_from(n).map_err(|_| format!("port {p} is out of range (1-65535)"))
        }
        _ => Err(format!("port {p} is out of range (1-65535)")),
    }
}

/// DNS names as they appear in SNI and Host: letters, digits, `-` and `_`,
/// labels of 1-63 bytes, 253 bytes in all, optionally `*.` in front.
pub(crate) fn parse_name(name: &str) -> Result<NameMatch, String> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if rest.contains('*') {
        return Err(format!(
            "a wildcard is allowed only as the whole first label, as in \"*.corp.example\", not {name:?}"
        ));
    }
    if rest.is_empty() || rest.len() > 253 {
        return Err(format!("DNS name {name:?} must be 1-253 bytes long"));
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in DNS name {name:?}"));
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 bytes"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "invalid character {c:?} in {name:?}; expected an IPv4 address or CIDR, [IPv6], * or a DNS name"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} must not start or end with '-'"));
        }
    }
    Ok(if wildcard {
        NameMatch::Suffix(format!(".{rest}").into())
    } else {
        NameMatch::Exact(rest.into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> EgressEntry {
        match EgressEntry::parse(s) {
            Ok(e) => e,
            Err(why) => panic!("{s}: {why}"),
        }
    }

    fn err(s: &str) -> String {
        match EgressEntry::parse(s) {
            Ok(e) => panic!("{s} parsed as {e:?}"),
            Err(why) => why,
        }
    }

    #[test]
    fn egress_entry_forms() {
        assert_eq!(
            ok("10.1.2.3:80").addr,
            AddrMatch::V4 {
                net: 0x0a01_0203,
                mask: u32::MAX
            }
        );
        assert_eq!(ok("10.1.2.3:80").ports, PortMatch { lo: 80, hi: 80 });
        assert_eq!(
            ok("10.0.0.0/8").addr,
            AddrMatch::V4 {
                net: 0x0a00_0000,
                mask: 0xff00_0000
            }
        );
        assert_eq!(ok("10.0.0.0/8").ports, PortMatch::ANY);
        assert_eq!(ok("0.0.0.0/0:*").addr, AddrMatch::V4 { net: 0, mask: 0 });
        assert_eq!(ok("*:8000-8099").ports, PortMatch { lo: 8000, hi: 8099 });
        assert_eq!(ok("*").addr, AddrMatch::Any);
        assert_eq!(
            ok("[::1]:443").addr,
            AddrMatch::V6 {
                net: 1,
                mask: u128::MAX
            }
        );
        assert_eq!(ok("[::/0]").addr, AddrMatch::V6 { net: 0, mask: 0 });
        assert_eq!(
            ok("[::ffff:10.0.0.0/104]:1").addr,
            AddrMatch::V4 {
                net: 0x0a00_0000,
                mask: 0xff00_0000
            }
        );
        assert_eq!(
            ok("API.OpenAI.com.:443").addr,
            AddrMatch::Name(NameMatch::Exact("api.openai.com".into()))
        );
        assert_eq!(
            ok("*.corp.example").addr,
            AddrMatch::Name(NameMatch::Suffix(".corp.example".into()))
        );
    }

    #[test]
    fn egress_entry_errors() {
        assert_eq!(
            err("10.0.0.0/33:80"),
            "prefix length 33 is out of range for IPv4 (0-32)"
        );
        assert_eq!(
            err("10.0.0.1/8"),
            "host bits are set in 10.0.0.1/8; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("[::1/129]"),
            "prefix length 129 is out of range for IPv6 (0-128)"
        );
        assert_eq!(
            err("::1:80"),
            "IPv6 addresses must be written in brackets, e.g. \"[::1]:443\" or \"[fd00::/8]\""
        );
        assert_eq!(err("[::1"), "missing ']' after the IPv6 address");
        assert_eq!(
            err("[::1]80"),
            "unexpected \"80\" after ']'; expected :PORT"
        );
        assert_eq!(err("1.2.3.4:0"), "port 0 is out of range (1-65535)");
        assert_eq!(
            err("1.2.3.4:"),
            "missing port after ':'; expected a number 1-65535, a range such as 8000-8099, or *"
        );
        assert_eq!(err("1.2.3.256"), "invalid IPv4 address \"1.2.3.256\"");
        assert_eq!(err("a.*.example"), "a wildcard is allowed only as the whole first label, as in \"*.corp.example\", not \"a.*.example\"");
        assert_eq!(
            err("-bad.example"),
            "label \"-bad\" must not start or end with '-'"
        );
        assert_eq!(err("a..b"), "empty label in DNS name \"a..b\"");
        assert_eq!(err(":80"), "missing address before ':'");
        assert_eq!(
            err(""),
            "empty entry; expected ADDR[:PORT], e.g. \"10.0.0.0/8:5432\""
        );
    }

    #[test]
    fn udp_entries_take_addresses_and_single_ports() {
        let e = ok("udp://127.0.0.53:53");
        assert!(e.udp);
        assert_eq!(
            e.udp_allow(),
            Some(UdpAllow {
                addr: "::ffff:127.0.0.53".parse().unwrap(),
                prefix_len: 128,
                port: Some(53)
            })
        );
        assert_eq!(
            ok("udp://10.0.0.0/8").udp_allow(),
            Some(UdpAllow {
                addr: "::ffff:10.0.0.0".parse().unwrap(),
                prefix_len: 104,
                port: None
            })
        );
        assert_eq!(
            ok("udp://[fd00::/8]:443").udp_allow(),
            Some(UdpAllow {
                addr: "fd00::".parse().unwrap(),
                prefix_len: 8,
                port: Some(443)
            })
        );
        assert_eq!(ok("udp://*").udp_allow().map(|u| u.prefix_len), Some(0));
        // Without a scheme an entry is TCP and has no kernel UDP form.
        assert!(!ok("127.0.0.53:53").udp);
        assert_eq!(ok("127.0.0.53:53").udp_allow(), None);
        assert!(err("udp://dns.example:53").starts_with("a udp:// entry takes an IP address"));
        assert_eq!(
            err("udp://10.0.0.1:5000-5010"),
            "a udp:// entry takes one port or *, not a range"
        );
        assert_eq!(
            err("quic://10.0.0.1:443"),
            "unknown scheme \"quic\"; the only scheme is udp:// (an entry without one is TCP)"
        );
    }

    #[test]
    fn egress_name_matching() {
        let exact = ok("api.openai.com:443");
        let ip = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));
        assert!(exact.matches(ip, 443, Some("API.openai.com.")));
        assert!(!exact.matches(ip, 443, None));
        assert!(!exact.matches(ip, 80, Some("api.openai.com")));
        let wild = ok("*.corp.example");
        assert!(wild.matches(ip, 1, Some("a.corp.example")));
        assert!(wild.matches(ip, 1, Some("a.b.corp.example")));
        assert!(!wild.matches(ip, 1, Some("corp.example")));
        assert!(!wild.matches(ip, 1, Some("xcorp.example")));
        assert!(!wild.matches(ip, 1, Some("é.corp.exampl")));
    }
}
