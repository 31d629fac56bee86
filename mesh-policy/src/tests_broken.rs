//! Broken policies of the typed sections: each must be refused with the
//! exact `file:line:col: message` an operator sees.

use super::*;

const HEAD: &str = "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: a\n";

/// A policy with one mcp server whose entry ends with `extra` (indented).
fn mcp(extra: &str) -> String {
    format!("{HEAD}mcp:\n  - server: tickets\n    address: \"127.0.0.2:7001\"\n{extra}")
}

fn load(text: &str) -> Result<PolicySet, String> {
    PolicySet::from_files(&[("p.yaml".to_string(), text.to_string())]).map_err(|e| e.to_string())
}

#[test]
fn policy_broken_typed_sections_report_file_line_column() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key in an mcp entry",
            mcp("    tool: {}\n"),
            "p.yaml:7:5: unknown field `tool`, expected one of `server`, `address`, `trust_annotations`, \
             `tools`, `grant`, `resources`, `prompts`, `when`",
        ),
        (
            "unknown key in tools",
            mcp("    tools: { read: [a], admin: [b] }\n"),
            "p.yaml:7:25: unknown field `admin`, expected one of `read`, `write`, `execute`, `deny`",
        ),
        (
            "empty glob",
            mcp("    tools: { read: [\"get_*\", \"\"] }\n"),
            "p.yaml:7:30: empty glob; expected a name or pattern such as \"get_*\"",
        ),
        (
            "unbalanced [ in a glob",
            mcp("    tools:\n      deny: [\"delete_[a-z\"]\n"),
            "p.yaml:8:14: glob \"delete_[a-z\" has an unclosed '[' (brackets are literal; only * and ? are special)",
        ),
        (
            "bad CEL",
            mcp("    when:\n      - 'tool == \"x\" &&'\n"),
            "p.yaml:8:9: invalid CEL condition \"tool == \\\"x\\\" &&\": at 1:15: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        ),
        (
            "unknown class in grant",
            mcp("    grant: [read, admin]\n"),
            "p.yaml:7:19: unknown variant `admin`, expected one of `read`, `write`, `execute`",
        ),
        (
            "grant is not a list",
            mcp("    grant: read\n"),
            "p.yaml:7:12: invalid type: string \"read\", expected a sequence",
        ),
        (
            "trust_annotations is not a boolean",
            mcp("    trust_annotations: yes please\n"),
            "p.yaml:7:24: invalid type: string \"yes please\", expected a boolean",
        ),
        (
            "duplicate mcp server, reported at the second",
            format!(
                "{HEAD}mcp:\n  - server: tickets\n    address: \"127.0.0.2:7001\"\n  - server: tickets\n    address: \"127.0.0.2:7002\"\n"
            ),
            "p.yaml:7:13: mcp server \"tickets\" is declared twice (first as mcp[0] at line 5); mcp server names \
             must be unique within an agent's policy",
        ),
        (
            "address without a port",
            format!("{HEAD}mcp:\n  - server: t\n    address: 127.0.0.2\n"),
            "p.yaml:6:14: invalid address \"127.0.0.2\": missing :PORT; expected host:port[/path], e.g. \"127.0.0.2:7001/mcp\"",
        ),
        (
            "address with a CIDR",
            format!("{HEAD}a2a:\n  - {{ agent: billing, address: \"10.0.0.0/8:80\" }}\n"),
            "p.yaml:5:32: invalid address \"10.0.0.0/8:80\": missing :PORT; expected host:port[/path], e.g. \"127.0.0.2:7001/mcp\"",
        ),
        (
            "unknown provider",
            format!("{HEAD}llm:\n  - {{ provider: mistral, address: \"127.0.0.2:1\" }}\n"),
            "p.yaml:5:17: unknown variant `mistral`, expected `openai` or `anthropic`",
        ),
        (
            "missing address in an llm entry",
            format!("{HEAD}llm:\n  - provider: openai\n    models: [\"gpt-*\"]\n"),
            "p.yaml:5:5: missing field `address`",
        ),
        (
            "budget with two limits",
            format!(
                "{HEAD}budgets:\n  - name: b\n    limit: {{ tokens: 10, usd: 5 }}\n    window: 1h\n    on_exhaust: halt\n"
            ),
            "p.yaml:6:12: a budget limit needs exactly one of tokens, usd or calls; found tokens and usd",
        ),
        (
            "budget with no limit",
            format!("{HEAD}budgets: [{{ name: b, limit: {{}}, window: 1h, on_exhaust: halt }}]\n"),
            "p.yaml:4:29: a budget limit needs exactly one of tokens, usd or calls; found none",
        ),
        (
            "bad duration",
            format!("{HEAD}budgets: [{{ name: b, limit: {{ calls: 5 }}, window: 1w, on_exhaust: halt }}]\n"),
            "p.yaml:4:51: invalid duration \"1w\": expected a whole number followed by s, m, h or d, from 1m to 30d, \
             e.g. \"90s\", \"15m\", \"24h\", \"7d\"",
        ),
        (
            "duration out of range",
            format!("{HEAD}quarantine:\n  triggers: [ {{ denials: 3, within: 10s }} ]\n"),
            "p.yaml:5:37: duration \"10s\" is out of range: expected 1m to 30d",
        ),
        (
            "unknown on_exhaust",
            format!("{HEAD}budgets: [{{ name: b, limit: {{ calls: 5 }}, window: 1h, on_exhaust: stop }}]\n"),
            "p.yaml:4:67: unknown variant `stop`, expected one of `halt`, `quarantine`, `escalate`",
        ),
        (
            "zero calls",
            format!("{HEAD}budgets: [{{ name: b, limit: {{ calls: 0 }}, window: 1h, on_exhaust: halt }}]\n"),
            "p.yaml:4:38: 0 is not allowed here: expected a whole number, 1 or more",
        ),
        (
            "negative price",
            format!("{HEAD}prices:\n  gpt-4o: {{ input: -1, output: 2 }}\n"),
            "p.yaml:5:20: -1 is not a valid amount: expected a number in USD, 0 or more",
        ),
        (
            "price as text",
            format!("{HEAD}prices:\n  gpt-4o: {{ input: cheap, output: 2 }}\n"),
            "p.yaml:5:20: invalid type: string \"cheap\", expected an amount in USD, a number 0 or more",
        ),
        (
            "required greater than the number of users",
            format!(
                "{HEAD}approvals:\n  - name: r\n    when: 'true'\n    approvers: {{ users: [alice], required: 2 }}\n    timeout: 15m\n"
            ),
            "p.yaml:7:44: required is 2 but 1 user(s) are listed: expected at most the number of users",
        ),
        (
            "an approver twice",
            format!(
                "{HEAD}approvals:\n  - name: r\n    when: 'true'\n    approvers: {{ users: [alice, alice], required: 1 }}\n    timeout: 15m\n"
            ),
            "p.yaml:7:33: approver \"alice\" is listed twice; approvers must be distinct users",
        ),
        (
            "bad CEL in an approval",
            format!(
                "{HEAD}approvals:\n  - name: r\n    when: 'args.amount >'\n    approvers: {{ users: [alice], required: 1 }}\n    timeout: 15m\n"
            ),
            "p.yaml:6:11: invalid CEL condition \"args.amount >\": at 1:14: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        ),
        (
            "unknown quarantine mode",
            format!("{HEAD}quarantine: {{ mode: kill }}\n"),
            "p.yaml:4:21: unknown variant `kill`, expected `isolate` or `freeze`",
        ),
        (
            "unknown key in a trigger",
            format!("{HEAD}quarantine:\n  triggers: [ {{ denials: 3, within: 1m, refusals: 2 }} ]\n"),
            "p.yaml:5:41: unknown field `refusals`, expected `denials` or `within`",
        ),
        (
            "server name with a space",
            format!("{HEAD}mcp:\n  - server: my tickets\n    address: \"127.0.0.2:7001\"\n"),
            "p.yaml:5:13: invalid name \"my tickets\": expected 1 to 64 characters from A-Z a-z 0-9 . _ -",
        ),
        (
            "duplicate a2a agent",
            format!(
                "{HEAD}a2a:\n  - {{ agent: b, address: \"127.0.0.2:9000\" }}\n  - {{ agent: b, address: \"127.0.0.2:9001\" }}\n"
            ),
            "p.yaml:6:14: a2a agent \"b\" is declared twice (first as a2a[0] at line 5); a2a agent names must be \
             unique within an agent's policy",
        ),
        (
            "bad apiVersion",
            "apiVersion: v1\nkind: AgentPolicy\nagent: a\n".to_string(),
            "p.yaml:1:13: unsupported apiVersion \"v1\": expected \"mesh/v1\"",
        ),
        (
            "duplicate agent",
            format!("{HEAD}---\n{HEAD}"),
            "p.yaml:7:8: agent \"a\" already has a policy at p.yaml:3:8; one agent, one policy",
        ),
        (
            "resources written as a list",
            mcp("    resources: [\"ticket://*\"]\n"),
            "p.yaml:7:16: invalid type: sequence, expected a mapping { allow: [glob, ...] }",
        ),
    ];
    assert!(cases.len() >= 18);
    let mut failures = Vec::new();
    for (what, text, want) in &cases {
        match load(text) {
            Ok(_) => failures.push(format!("{what}: accepted\n{text}")),
            Err(got) if got != *want => {
                failures.push(format!("{what}:\n   got: {got}\n  want: {want}"))
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
fn policy_post_parse_errors_of_one_document_are_all_reported() {
    let text = format!(
        "{HEAD}mcp:\n  - {{ server: s, address: \"127.0.0.2:1\" }}\n  - {{ server: s, address: \"127.0.0.2:2\" }}\n\
         budgets: [{{ name: b, limit: {{}}, window: 1h, on_exhaust: halt }}]\n"
    );
    let got = load(&text).err().unwrap_or_default();
    assert_eq!(got.lines().count(), 2, "{got}");
    assert!(
        got.starts_with("p.yaml:6:15: mcp server \"s\" is declared twice"),
        "{got}"
    );
    assert!(
        got.contains("\np.yaml:7:29: a budget limit needs exactly one"),
        "{got}"
    );
}
