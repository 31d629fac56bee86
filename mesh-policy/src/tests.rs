//! Policy loading and egress decision tests (pure, no privileges).

use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const HEAD: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n";

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn load(list: &[(&str, &str)]) -> Result<PolicySet, String> {
    PolicySet::from_files(&files(list)).map_err(|e| e.to_string())
}

fn set(text: &str) -> PolicySet {
    match PolicySet::from_files(&files(&[("demo.yaml", text)])) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn allow(rule: &str) -> EgressDecision {
    EgressDecision::Allow { rule: rule.into() }
}

#[test]
fn policy_broken_files_report_file_line_column() {
    let long = "x".repeat(57);
    let long_agent = format!("apiVersion: mesh/v1\nkind: AgentPolicy\nagent: {long}\n");
    let long_want =
        format!("p.yaml:3:8: invalid agent name \"{long}\": expected 1 to 56 characters from A-Z a-z 0-9 . _ -");
    let egress = |body: &str| format!("{HEAD}egress:\n{body}");
    let cases: Vec<(String, String)> = vec![
        // unknown top-level key
        (
            format!("{HEAD}egres: {{}}\n"),
            "p.yaml:4:1: unknown field `egres`, expected one of `apiVersion`, `kind`, `metadata`, `agent`, \
             `match`, `egress`, `ingress`, `tls`, `mcp`, `llm`, `a2a`, `prices`, `budgets`, `approvals`, `quarantine`"
                .into(),
        ),
        // unknown egress key
        (
            egress("  default: deny\n  alow: []\n"),
            "p.yaml:6:3: unknown field `alow`, expected one of `default`, `allow`, `deny`".into(),
        ),
        // bad apiVersion
        (
            "apiVersion: mesh/v2\nkind: AgentPolicy\nagent: a\n".into(),
            "p.yaml:1:13: unsupported apiVersion \"mesh/v2\": expected \"mesh/v1\"".into(),
        ),
        // bad kind
        (
            "apiVersion: mesh/v1\nkind: Policy\nagent: a\n".into(),
            "p.yaml:2:7: unsupported kind \"Policy\": expected \"AgentPolicy\"".into(),
        ),
        // bad agent name
        (
            "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: \"bad name\"\n".into(),
            "p.yaml:3:8: invalid agent name \"bad name\": expected 1 to 56 characters from A-Z a-z 0-9 . _ -"
                .into(),
        ),
        // agent name too long
        (long_agent, long_want),
        // bad CIDR (second entry of a block list)
        (
            egress("  allow:\n    - \"10.0.0.1:80\"\n    - \"10.0.0.0/33:80\"\n"),
            "p.yaml:7:7: invalid egress entry \"10.0.0.0/33:80\": prefix length 33 is out of range for IPv4 (0-32)"
                .into(),
        ),
        // bad port
        (
            egress("  allow: [\"1.2.3.4:http\"]\n"),
            "p.yaml:5:11: invalid egress entry \"1.2.3.4:http\": invalid port \"http\"; expected a number 1-65535, \
             a range such as 8000-8099, or *"
                .into(),
        ),
        // bad port range
        (
            egress("  deny:\n  - 1.2.3.4:9000-8000\n"),
            "p.yaml:6:5: invalid egress entry \"1.2.3.4:9000-8000\": port range 9000-8000 is empty \
             (start is greater than end)"
                .into(),
        ),
        // port out of range
        (
            egress("  allow: [\"*:70000\"]\n"),
            "p.yaml:5:11: invalid egress entry \"*:70000\": port 70000 is out of range (1-65535)".into(),
        ),
        // bad IPv6
        (
            egress("  allow: [\"[::1]:80\", \"[::g]:80\"]\n"),
            "p.yaml:5:23: invalid egress entry \"[::g]:80\": invalid IPv6 address \"::g\"".into(),
        ),
        // IPv6 without brackets
        (
            egress("  allow: [\"fd00::1:443\"]\n"),
            "p.yaml:5:11: invalid egress entry \"fd00::1:443\": IPv6 addresses must be written in brackets, \
             e.g. \"[::1]:443\" or \"[fd00::/8]\""
                .into(),
        ),
        // bad DNS name
        (
            egress("  allow: [\"api.open ai.com:443\"]\n"),
            "p.yaml:5:11: invalid egress entry \"api.open ai.com:443\": invalid character ' ' in \"api.open ai.com\"; \
             expected an IPv4 address or CIDR, [IPv6], * or a DNS name"
                .into(),
        ),
        // wrong type for allow
        (
            egress("  allow: 127.0.0.1\n"),
            "p.yaml:5:10: invalid type: string \"127.0.0.1\", expected a sequence".into(),
        ),
        // wrong type for an entry
        (
            egress("  allow:\n    - { addr: 127.0.0.1 }\n"),
            "p.yaml:6:7: invalid type: map, expected an egress entry string ADDR[:PORT] or udp://ADDR[:PORT], e.g. \"10.0.0.0/8:5432\""
                .into(),
        ),
        // wrong type for egress
        (
            format!("{HEAD}egress: [\"1.2.3.4\"]\n"),
            "p.yaml:4:9: invalid type: sequence, expected an egress mapping with default, allow and deny".into(),
        ),
        // bad default
        (
            egress("  default: maybe\n"),
            "p.yaml:5:12: unknown variant `maybe`, expected `deny` or `allow`".into(),
        ),
        // missing agent
        (
            "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: { name: x }\n".into(),
            "p.yaml:1:1: missing field `agent`".into(),
        ),
        // missing apiVersion
        ("kind: AgentPolicy\nagent: a\n".into(), "p.yaml:1:1: missing field `apiVersion`".into()),
        // empty file
        (
            "# nothing here\n".into(),
            "p.yaml:1:1: no policy in this file: expected a mapping with apiVersion, kind and agent".into(),
        ),
        // non-mapping document
        (
            "- apiVersion: mesh/v1\n".into(),
            "p.yaml:1:1: invalid type: sequence, expected a policy mapping with apiVersion, kind and agent".into(),
        ),
        // tab: YAML syntax error
        (
            format!("{HEAD}egress:\n\tdefault: allow\n"),
            "p.yaml:5:1: YAML syntax error: found character that cannot start any token, while scanning for \
             the next token"
                .into(),
        ),
        // unclosed flow sequence
        (
            egress("  allow: [\"1.2.3.4\"\n"),
            "p.yaml:6:1: YAML syntax error: did not find expected ',' or ']', while parsing a flow sequence \
             at line 5 column 10"
                .into(),
        ),
        // duplicate key
        (
            format!("{HEAD}egress:\n  allow: []\n  allow: []\n"),
            "p.yaml:6:3: duplicate key `allow`: each key may appear once in a mapping".into(),
        ),
        // unknown metadata key
        (
            format!("{HEAD}metadata:\n  name: a\n  labels: {{}}\n"),
            "p.yaml:6:3: unknown field `labels`, expected `name`".into(),
        ),
        // unknown match key and bad selector
        (format!("{HEAD}match: {{ pid: 1 }}\n"), "p.yaml:4:10: unknown field `pid`, expected `cgroup`".into()),
        (
            format!("{HEAD}match:\n  cgroup: system.slice/x\n"),
            "p.yaml:5:11: invalid cgroup selector \"system.slice/x\": expected an absolute glob below the cgroup \
             root without \"..\", e.g. \"/system.slice/support-*.service\""
                .into(),
        ),
        // error in the second document: lines count from the top of the file
        (
            format!("{HEAD}---\n{HEAD}egress: {{ default: deny, allow: [\"10.0.0.1/8\"] }}\n"),
            "p.yaml:8:34: invalid egress entry \"10.0.0.1/8\": host bits are set in 10.0.0.1/8; did you mean \
             10.0.0.0/8?"
                .into(),
        ),
        // the same agent twice in one file
        (
            format!("{HEAD}---\n{HEAD}"),
            "p.yaml:7:8: agent \"a\" already has a policy at p.yaml:3:8; one agent, one policy".into(),
        ),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        match load(&[("p.yaml", text)]) {
            Ok(_) => failures.push(format!("{text:?}\n   accepted\n  want: {want}")),
            Err(got) if got != *want => {
                failures.push(format!("{text:?}\n   got: {got}\n  want: {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn policy_duplicate_agent_across_files_names_both_places() {
    let a = "# first\napiVersion: mesh/v1\nkind: AgentPolicy\nagent: demo\n";
    let b = "apiVersion: mesh/v1\nkind: AgentPolicy\nmetadata: { name: other }\nagent:   demo\n";
    assert_eq!(
        load(&[("a.yaml", a), ("b.yaml", b)]).err(),
        Some(
            "b.yaml:4:10: agent \"demo\" already has a policy at a.yaml:4:8; one agent, one policy"
                .into()
        )
    );
}

#[test]
fn policy_errors_of_all_files_are_collected() {
    let bad1 = format!("{HEAD}egress:\n  allow: [\"1.2.3.4:0\"]\n  deny: [\"[::1\"]\n");
    let bad2 = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: b\nfoo: 1\n";
    let good = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: c\n";
    let got = PolicySet::from_files(&files(&[
        ("1.yaml", &bad1),
        ("2.yaml", good),
        ("3.yaml", bad2),
    ]));
    let Err(PolicyErrors(errors)) = got else {
        panic!("accepted")
    };
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    // serde stops a document at its first error; other documents and files go on.
    assert_eq!(
        lines,
        vec![
            "1.yaml:5:11: invalid egress entry \"1.2.3.4:0\": port 0 is out of range (1-65535)".to_string(),
            "3.yaml:4:1: unknown field `foo`, expected one of `apiVersion`, `kind`, `metadata`, `agent`, `match`, \
             `egress`, `ingress`, `tls`, `mcp`, `llm`, `a2a`, `prices`, `budgets`, `approvals`, `quarantine`"
                .to_string(),
        ]
    );
    assert_eq!(
        errors[0],
        PolicyError {
            file: "1.yaml".into(),
            line: 5,
            column: 11,
            message: errors[0].message.clone()
        }
    );
    let display = PolicyErrors(errors).to_string();
    assert_eq!(display.lines().count(), 2);
}

#[test]
fn policy_all_sections_are_typed_and_exposed() {
    let text = format!(
        "{HEAD}mcp:\n  - server: tickets\n    address: \"127.0.0.2:7001\"\n\
         llm: [{{provider: openai, address: \"api.openai.com:443\", models: [\"gpt-4o*\"]}}]\n\
         a2a: [{{agent: billing, address: \"127.0.0.2:9000\"}}]\n\
         prices: {{ gpt-4o-mini: {{ input: 0.15, output: 0.60 }}, big: {{ input: 3, output: 15, cached_input: 0 }} }}\n\
         budgets:\n\
         \x20 - {{ name: daily-tokens, limit: {{ tokens: 2000000 }}, window: 24h, on_exhaust: halt }}\n\
         \x20 - {{ name: spend, limit: {{ usd: 25 }}, window: 24h, on_exhaust: escalate, server: tickets, tool: get_x }}\n\
         \x20 - {{ name: runaway, limit: {{ calls: 120 }}, window: 1m, on_exhaust: quarantine }}\n\
         approvals:\n\
         \x20 - name: big-refund\n\
         \x20   when: 'server == \"billing\" && tool == \"refund\" && args.amount > 100'\n\
         \x20   approvers: {{ users: [alice, bob], required: 2 }}\n\
         \x20   timeout: 15m\n\
         quarantine: {{ triggers: [ {{ denials: 10, within: 1m }} ], mode: freeze }}\n"
    );
    let p = set(&text);
    let day = std::time::Duration::from_secs(86400);
    assert_eq!(
        p.budgets("a"),
        &[
            Budget {
                name: "daily-tokens".into(),
                limit: BudgetLimit::Tokens(2_000_000),
                window: day,
                on_exhaust: OnExhaust::Halt,
                server: None,
                tool: None
            },
            Budget {
                name: "spend".into(),
                limit: BudgetLimit::Usd(25.0),
                window: day,
                on_exhaust: OnExhaust::Escalate,
                server: Some("tickets".into()),
                tool: Some("get_x".into())
            },
            Budget {
                name: "runaway".into(),
                limit: BudgetLimit::Calls(120),
                window: std::time::Duration::from_secs(60),
                on_exhaust: OnExhaust::Quarantine,
                server: None,
                tool: None
            },
        ]
    );
    let prices = p.prices("a").cloned().unwrap_or_default();
    assert_eq!(
        prices.get("gpt-4o-mini"),
        Some(&Price {
            input: 0.15,
            output: 0.60,
            cached_input: None
        })
    );
    assert_eq!(
        prices.get("big"),
        Some(&Price {
            input: 3.0,
            output: 15.0,
            cached_input: Some(0.0)
        })
    );
    let approvals = p.approvals("a");
    assert_eq!(approvals.len(), 1);
    assert_eq!(&*approvals[0].name, "big-refund");
    assert_eq!(approvals[0].required, 2);
    assert_eq!(
        approvals[0].users,
        vec![Box::from("alice"), Box::from("bob")]
    );
    assert_eq!(approvals[0].timeout, std::time::Duration::from_secs(900));
    assert!(approvals[0].when.text().contains("args.amount > 100"));
    assert_eq!(
        p.quarantine("a"),
        Some(&Quarantine {
            triggers: vec![QuarantineTrigger {
                denials: 10,
                within: std::time::Duration::from_secs(60)
            }],
            mode: QuarantineMode::Freeze
        })
    );
    // Unknown agents have none of it.
    assert!(p.budgets("b").is_empty() && p.approvals("b").is_empty());
    assert!(p.prices("b").is_none() && p.quarantine("b").is_none());
}

#[test]
fn policy_exact_ip_and_port() {
    let p = set(&format!("{HEAD}egress:\n  allow: [\"127.0.0.2:8080\"]\n"));
    assert_eq!(
        p.decide_egress("a", addr("127.0.0.2:8080"), None),
        allow("egress.allow[0]")
    );
    let refused = p.decide_egress("a", addr("127.0.0.2:8081"), None);
    assert_eq!(
        refused,
        EgressDecision::Refuse {
            rule: "egress.default".into(),
            reason: "no egress.allow entry of agent a matches 127.0.0.2:8081; the default is deny (demo.yaml)"
                .into()
        }
    );
    assert!(!p
        .decide_egress("a", addr("127.0.0.3:8080"), None)
        .is_allow());
    assert!(!p.decide_egress("a", addr("[::1]:8080"), None).is_allow());
}

#[test]
fn policy_cidr_and_port_range() {
    let p = set(&format!(
        "{HEAD}egress:\n  allow:\n    - 10.0.0.0/8:5432\n    - 127.0.0.0/24:8000-8099\n"
    ));
    assert!(p
        .decide_egress("a", addr("10.255.1.2:5432"), None)
        .is_allow());
    assert!(!p.decide_egress("a", addr("11.0.0.1:5432"), None).is_allow());
    assert!(!p.decide_egress("a", addr("10.0.0.1:5433"), None).is_allow());
    assert_eq!(
        p.decide_egress("a", addr("127.0.0.9:8000"), None).rule(),
        "egress.allow[1]"
    );
    assert!(p
        .decide_egress("a", addr("127.0.0.9:8099"), None)
        .is_allow());
    assert!(!p
        .decide_egress("a", addr("127.0.0.9:8100"), None)
        .is_allow());
    assert!(!p
        .decide_egress("a", addr("127.0.1.9:8050"), None)
        .is_allow());
}

#[test]
fn policy_ipv6_and_v4_mapped() {
    let p = set(&format!(
        "{HEAD}egress:\n  allow: [\"[::1]:8080\", \"[fd00::/8]\", \"127.0.0.2:8080\"]\n"
    ));
    assert!(p.decide_egress("a", addr("[::1]:8080"), None).is_allow());
    assert!(!p.decide_egress("a", addr("[::1]:8081"), None).is_allow());
    assert!(p
        .decide_egress("a", addr("[fd12:3456::1]:1"), None)
        .is_allow());
    assert!(!p.decide_egress("a", addr("[fe80::1]:1"), None).is_allow());
    // A dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d: IPv4 rules apply.
    assert_eq!(
        p.decide_egress("a", addr("[::ffff:127.0.0.2]:8080"), None)
            .rule(),
        "egress.allow[2]"
    );
    assert!(!p
        .decide_egress("a", addr("[::ffff:127.0.0.3]:8080"), None)
        .is_allow());
    // ...and denials too.
    let d = set(&format!(
        "{HEAD}egress:\n  default: allow\n  deny: [\"10.0.0.0/8\"]\n"
    ));
    assert!(!d
        .decide_egress("a", addr("[::ffff:10.1.2.3]:443"), None)
        .is_allow());
    assert!(d
        .decide_egress(
            "a",
            SocketAddr::new(IpAddr::V6(Ipv4Addr::new(11, 0, 0, 1).to_ipv6_mapped()), 443),
            None
        )
        .is_allow());
}

#[test]
fn policy_wildcards() {
    let p = set(&format!("{HEAD}egress:\n  allow: [\"*:443\"]\n"));
    assert!(p.decide_egress("a", addr("1.2.3.4:443"), None).is_allow());
    assert!(p
        .decide_egress("a", addr("[2001:db8::1]:443"), None)
        .is_allow());
    assert!(!p.decide_egress("a", addr("1.2.3.4:80"), None).is_allow());
    let any = set(&format!(
        "{HEAD}egress:\n  allow: [\"*\", \"10.0.0.1:*\"]\n"
    ));
    assert!(any.decide_egress("a", addr("9.9.9.9:1"), None).is_allow());
    assert!(any
        .decide_egress(
            "a",
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 65535),
            None
        )
        .is_allow());
}

#[test]
fn policy_deny_wins_over_allow() {
    let p = set(&format!(
        "{HEAD}egress:\n  allow: [\"10.0.0.0/8\", \"*.corp.example:443\"]\n  deny: [\"10.0.0.5\", \"secret.corp.example\"]\n"
    ));
    assert!(p.decide_egress("a", addr("10.0.0.4:22"), None).is_allow());
    assert_eq!(
        p.decide_egress("a", addr("10.0.0.5:22"), None),
        EgressDecision::Refuse {
            rule: "egress.deny[0]".into(),
            reason: "egress to 10.0.0.5:22 is denied by egress.deny[0] \"10.0.0.5\" (demo.yaml)"
                .into()
        }
    );
    // Names match only the server name (SNI / Host), never an IP alone.
    assert!(p
        .decide_egress("a", addr("192.0.2.1:443"), Some("wiki.corp.example"))
        .is_allow());
    assert!(!p.decide_egress("a", addr("192.0.2.1:443"), None).is_allow());
    assert_eq!(
        p.decide_egress("a", addr("192.0.2.1:443"), Some("Secret.corp.example"))
            .rule(),
        "egress.deny[1]"
    );
}

#[test]
fn policy_default_allow() {
    let p = set(&format!("{HEAD}egress: {{ default: allow }}\n"));
    assert_eq!(
        p.decide_egress("a", addr("203.0.113.1:25"), None),
        allow("egress.default")
    );
    // No egress section at all: deny.
    let none = set(HEAD);
    assert_eq!(
        none.decide_egress("a", addr("127.0.0.1:1"), None).rule(),
        "egress.default"
    );
    assert!(!none
        .decide_egress("a", addr("127.0.0.1:1"), None)
        .is_allow());
}

#[test]
fn policy_agent_without_policy_is_refused() {
    let p = set(HEAD);
    let want = EgressDecision::Refuse {
        rule: "no-policy".into(),
        reason: "agent b has no policy: all egress is denied".into(),
    };
    assert_eq!(p.decide_egress("b", addr("127.0.0.2:8080"), None), want);
    let empty: Arc<dyn EgressPolicy> = Arc::new(PolicySet::empty());
    assert_eq!(empty.decide_egress("b", addr("127.0.0.2:8080"), None), want);
}

#[test]
fn policy_set_accessors() {
    let p = load(&[
        ("x.yaml", "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: zeta\nmatch: { cgroup: \"/system.slice/z-*.service\" }\n"),
        ("y.yaml", "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: alpha\n---\napiVersion: mesh/v1\nkind: AgentPolicy\nagent: mid.v2_x-y\n"),
    ]);
    let Ok(p) = p else { panic!("{p:?}") };
    assert_eq!(
        p.agents().collect::<Vec<_>>(),
        vec!["alpha", "mid.v2_x-y", "zeta"]
    );
    assert!(p.has_agent("zeta") && !p.has_agent("beta"));
    assert_eq!(
        p.cgroup_selectors(),
        vec![("zeta".to_string(), "/system.slice/z-*.service".to_string())]
    );
    fn shareable<T: Clone + Send + Sync + std::fmt::Debug + 'static>(_: &T) {}
    shareable(&p);
    assert_eq!(PolicySet::empty().agents().count(), 0);
}

#[test]
fn policy_repo_policies_dir_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let p = match PolicySet::load_dir(&dir) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert!(p.has_agent("demo"));
    assert!(p
        .decide_egress("demo", addr("127.0.0.2:8080"), None)
        .is_allow());
    assert!(p.decide_egress("demo", addr("[::1]:8080"), None).is_allow());
    assert!(!p
        .decide_egress("demo", addr("127.0.0.2:8081"), None)
        .is_allow());
    assert!(!p
        .decide_egress("demo", addr("127.0.0.1:8080"), None)
        .is_allow());
}

#[test]
fn policy_load_dir_sorted_filtered_and_all_errors() {
    let dir = std::env::temp_dir().join(format!("mesh-policy-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = std::fs::create_dir_all(dir.join("sub.yaml"));
    assert!(made.is_ok());
    let write = |name: &str, text: &str| assert!(std::fs::write(dir.join(name), text).is_ok());
    write(
        "b.yml",
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: b\nx: 1\n",
    );
    write(
        "a.yaml",
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\negress: { default: nope }\n",
    );
    write(
        "c.yaml",
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: c\n",
    );
    write("notes.txt", "not a policy");
    write(".hidden.yaml", "garbage: [");
    let got = PolicySet::load_dir(&dir).map_err(|e| e.to_string());
    let a = dir.join("a.yaml").display().to_string();
    let b = dir.join("b.yml").display().to_string();
    assert_eq!(
        got.err(),
        Some(format!(
            "{a}:4:20: unknown variant `nope`, expected `deny` or `allow`\n\
             {b}:4:1: unknown field `x`, expected one of `apiVersion`, `kind`, `metadata`, `agent`, `match`, \
             `egress`, `ingress`, `tls`, `mcp`, `llm`, `a2a`, `prices`, `budgets`, `approvals`, `quarantine`"
        ))
    );
    write(
        "a.yaml",
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n",
    );
    write(
        "b.yml",
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: b\n",
    );
    let ok = PolicySet::load_dir(&dir);
    assert!(
        matches!(&ok, Ok(p) if p.agents().collect::<Vec<_>>() == ["a", "b", "c"]),
        "{ok:?}"
    );
    let missing = PolicySet::load_dir(&dir.join("missing")).map_err(|e| e.to_string());
    assert!(
        matches!(&missing, Err(e) if e.contains("missing: cannot read policy directory: ")),
        "{missing:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
