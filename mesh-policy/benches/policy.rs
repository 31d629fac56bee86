//! Policy decision latency and reload time, run by
//! `cargo bench -p mesh-policy --bench policy` and by `cargo xtask bench`.
//!
//! The set: 1,000 agents with 50 rules each (10 egress entries; 4 MCP servers
//! with 6 tool globs, a grant and a resource glob each; an LLM entry with
//! 4 model globs), as YAML files the way an operator would write them. The
//! decision measured is a `tools/call` the policy allows through a grant,
//! for an agent in the middle of the set; the allow path must not allocate
//! (checked by `tests/policy_alloc.rs`).
use std::net::SocketAddr;

use mesh_l7::{Call, Direction, Protocol};
use mesh_policy::{CallContext, DecisionPoint, PolicySet};

const AGENTS: usize = 1000;

fn main() {
    divan::main();
}

/// One agent's policy: 50 rules.
fn agent_policy(i: usize) -> String {
    let mut y = format!(
        "apiVersion: mesh/v1\nkind: AgentPolicy\nagent: agent-{i}\negress:\n  default: deny\n  allow:\n"
    );
    for e in 0..10 {
        y += &format!("    - \"127.0.{}.{}:{}\"\n", e / 250, 2 + e % 250, 7000 + e);
    }
    y += "mcp:\n";
    for s in 0..4 {
        y += &format!(
            "  - server: srv{s}\n    address: \"127.0.0.{}:{}/mcp\"\n    tools:\n      read: [\"get_*\", \"list_*\", \"search_*\"]\n      write: [\"update_*\", \"comment_*\"]\n      deny: [\"delete_*\"]\n    grant: [read]\n    resources: {{ allow: [\"ticket://*\"] }}\n",
            2 + s,
            7000 + s
        );
    }
    y += "llm:\n  - provider: openai\n    address: \"127.0.0.9:8080\"\n    models: [\"gpt-4o-mini\", \"gpt-4.1-*\", \"o3-mini\", \"o4-*\"]\n";
    y
}

fn files() -> Vec<(String, String)> {
    (0..AGENTS)
        .map(|i| (format!("agent-{i}.yaml"), agent_policy(i)))
        .collect()
}

fn tool_call(tool: &str) -> Call {
    Call {
        protocol: Protocol::Mcp,
        direction: Direction::ClientToServer,
        method: "tools/call".into(),
        name: Some(tool.into()),
        arguments: None,
        id: None,
        session: None,
        version: None,
        mcp: None,
        a2a: None,
        llm: None,
    }
}

#[divan::bench(sample_count = 1000, sample_size = 100)]
fn decide_allowed_tool_call(bencher: divan::Bencher) {
    let set = PolicySet::from_files(&files()).expect("the generated policies load");
    let call = tool_call("get_ticket");
    let server: SocketAddr = "127.0.0.3:7001".parse().expect("address");
    let agent = format!("agent-{}", AGENTS / 2);
    let ctx = CallContext {
        agent: &agent,
        cgroup_id: 1,
        pid: 1,
        uid: 0,
        server,
        server_name: None,
        path: "/mcp",
        call: &call,
    };
    assert_eq!(set.decide(&ctx).label(), "allow", "{:?}", set.decide(&ctx));
    bencher.bench_local(|| divan::black_box(&set).decide(divan::black_box(&ctx)));
}

#[divan::bench(sample_count = 1000, sample_size = 100)]
fn decide_refused_tool_call(bencher: divan::Bencher) {
    let set = PolicySet::from_files(&files()).expect("the generated policies load");
    let call = tool_call("delete_ticket");
    let server: SocketAddr = "127.0.0.3:7001".parse().expect("address");
    let agent = format!("agent-{}", AGENTS / 2);
    let ctx = CallContext {
        agent: &agent,
        cgroup_id: 1,
        pid: 1,
        uid: 0,
        server,
        server_name: None,
        path: "/mcp",
        call: &call,
    };
    bencher.bench_local(|| divan::black_box(&set).decide(divan::black_box(&ctx)));
}

/// What a reload costs: parse and compile the whole set.
#[divan::bench(sample_count = 10)]
fn reload_1000_agents(bencher: divan::Bencher) {
    let files = files();
    bencher.bench_local(|| PolicySet::from_files(divan::black_box(&files)).expect("loads"));
}
