//! `meshctl`: the operator CLI, a client of the daemon's admin socket.
//! Exit codes: 0 ok, 1 refused or failed, 2 usage error, 3 daemon unreachable.
mod cli;
mod exec;
mod output;
mod policy;
mod user;

use std::process::ExitCode;

use clap::Parser;
use mesh_agent::{
    admin::{
        api::{self, *},
        client::{AdminClient, ClientError},
    },
    config::{MESHCTL_EXIT_FAILED as EXIT_FAILED, MESHCTL_EXIT_UNREACHABLE as EXIT_UNREACHABLE},
};

use cli::{AuditCommand, BudgetCommand, Cli, Command, Output};
use output::{plural, print_budgets, print_json, print_records, print_status};

fn main() -> ExitCode {
    let cli = Cli::parse();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::from(match e {
                ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
                _ => EXIT_FAILED,
            })
        }
    }
}

async fn run(cli: &Cli) -> Result<ExitCode, ClientError> {
    let client = AdminClient::new(&cli.socket);
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Status => {
            let s: StatusResponse = client.get(api::STATUS).await?;
            if json {
                print_json(&s);
            } else {
                print_status(&s);
            }
        }
        Command::Tag { cgroup, agent } => {
            let r: CgroupResponse = client
                .post(
                    api::TAG,
                    &TagRequest {
                        cgroup: cgroup.clone(),
                        agent: agent.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!("tagged {} (id {}) as agent {agent}", r.cgroup, r.cgroup_id);
            }
        }
        Command::Untag { cgroup } => {
            let r: CgroupResponse = client
                .post(
                    api::UNTAG,
                    &CgroupRequest {
                        cgroup: cgroup.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!("untagged {}", r.cgroup);
            }
        }
        Command::Quarantine { target } | Command::Release { target } => {
            let (path, verb) = match cli.command {
                Command::Quarantine { .. } => (api::QUARANTINE, "quarantined"),
                _ => (api::RELEASE, "released"),
            };
            let r: TargetResponse = client
                .post(
                    path,
                    &TargetRequest {
                        target: target.clone(),
                    },
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "{verb} {} ({} cgroup{})",
                    r.target,
                    r.cgroups_changed,
                    plural(r.cgroups_changed)
                );
            }
        }
        Command::Audit {
            command: AuditCommand::Tail { n },
        } => {
            let r: RecordsResponse = client.get(&format!("{}?n={n}", api::RECORDS)).await?;
            if json {
                print_json(&r);
            } else {
                print_records(&r.records);
            }
        }
        Command::Budget {
            command: BudgetCommand::Show { agent },
        } => {
            let path = match agent {
                Some(a) => format!("{}?agent={a}", api::BUDGETS),
                None => api::BUDGETS.to_owned(),
            };
            let r: BudgetsResponse = client.get(&path).await?;
            if json {
                print_json(&r);
            } else {
                print_budgets(&r);
            }
        }
        Command::Policy { command } => return policy::policy(&client, command, json).await,
        Command::Exec { agent, user, cmd } => {
            return exec::exec(&client, agent, user.as_deref(), cmd).await
        }
        Command::ExecGate { fd, user, cmd } => {
            return Ok(exec::exec_gate(*fd, user.as_deref(), cmd))
        }
    }
    Ok(ExitCode::SUCCESS)
}
