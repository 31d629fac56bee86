//! `meshctl policy`: check a directory locally, reload and explain through
//! the daemon.
use std::process::ExitCode;

use mesh_agent::{
    admin::{
        api::{self, PolicyErrorBody, ReloadResponse},
        client::{AdminClient, ClientError},
    },
    config::MESHCTL_EXIT_FAILED as EXIT_FAILED,
    policy::{ExplainQuery, Explanation, PolicySet},
};

use crate::{
    cli::PolicyCommand,
    output::{plural, print_json},
};

pub(crate) async fn policy(
    client: &AdminClient,
    command: &PolicyCommand,
    json: bool,
) -> Result<ExitCode, ClientError> {
    match command {
        PolicyCommand::Check { dir } => Ok(policy_check(dir, json)),
        PolicyCommand::Reload => {
            let (_, r): (_, ReloadResponse) = client
                .post_accepting(
                    api::POLICY_RELOAD,
                    &serde_json::json!({}),
                    hyper::StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await?;
            if json {
                print_json(&r);
            } else if r.ok {
                println!(
                    "policy reloaded: generation {}, {} agent{}: {}",
                    r.generation,
                    r.agents.len(),
                    plural(r.agents.len()),
                    r.agents.join(", ")
                );
            } else {
                eprintln!(
                    "meshctl: policy reload refused ({} error{}); generation {} stays in force:",
                    r.errors.len(),
                    plural(r.errors.len()),
                    r.generation
                );
                for e in &r.errors {
                    eprintln!("{}", e.text);
                }
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
        PolicyCommand::Explain {
            agent,
            server,
            tool,
            args,
        } => {
            let e: Explanation = client
                .post(
                    api::POLICY_EXPLAIN,
                    &ExplainQuery {
                        agent: agent.clone(),
                        server: server.clone(),
                        tool: tool.clone(),
                        args: args.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&e);
            } else {
                println!("decision: {}", e.decision);
                println!("rule:     {}", e.rule);
                if let Some(reason) = &e.reason {
                    println!("reason:   {reason}");
                }
                if !e.steps.is_empty() {
                    println!("steps:");
                    for (i, step) in e.steps.iter().enumerate() {
                        println!("  {}. {step}", i + 1);
                    }
                }
            }
            // Scriptable: `meshctl policy explain … && deploy` in a policy
            // test passes only when the call would be allowed.
            Ok(if e.decision == "allow" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
    }
}

/// `meshctl policy check DIR`: local, no daemon.
fn policy_check(dir: &std::path::Path, json: bool) -> ExitCode {
    match PolicySet::load_dir(dir) {
        Ok(set) => {
            let agents: Vec<&str> = set.agents().collect();
            if json {
                print_json(&serde_json::json!({ "ok": true, "dir": dir, "agents": agents }));
            } else {
                println!(
                    "{}: ok, {} agent{}{}{}",
                    dir.display(),
                    agents.len(),
                    plural(agents.len()),
                    if agents.is_empty() { "" } else { ": " },
                    agents.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                let list: Vec<PolicyErrorBody> =
                    errors.0.iter().map(PolicyErrorBody::from).collect();
                print_json(&serde_json::json!({ "ok": false, "dir": dir, "errors": list }));
            } else {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!(
                    "meshctl: {} error{} in {}",
                    errors.0.len(),
                    plural(errors.0.len()),
                    dir.display()
                );
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}
