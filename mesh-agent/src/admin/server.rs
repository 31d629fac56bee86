//! Admin API server.
use std::{convert::Infallible, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{body::Incoming, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{net::UnixListener, sync::watch};

use super::{
    api::*,
    roles::{AdminGroups, Caller, Role},
};
use crate::{
    budget::{Ledger, Unit},
    config::ADMIN_MAX_BODY_BYTES,
    policy::{ExplainQuery, PolicyStore},
    policy_watch::PolicyReloader,
    proxy::ActiveConnections,
    records::RecordLog,
    state::{Governor, QuarantineMode, StateError},
};

pub struct Admin {
    pub governor: Arc<Governor>,
    pub records: Arc<RecordLog>,
    pub policies: Arc<PolicyStore>,
    pub reloader: Arc<PolicyReloader>,
    pub listen: Vec<String>,
    pub active: ActiveConnections,
    pub ledger: Arc<Ledger>,
    pub groups: AdminGroups,
}

/// Binds the socket: stale file removed, 0660, owned by the viewers group
/// (else the operators group) when it exists, so that only root and the
/// holders of a role reach it; the daemon then checks each request's role.
pub fn bind(path: &Path, groups: &AdminGroups) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    match groups.socket_group() {
        Some((gid, name)) => {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            tracing::info!(group = name, "admin socket open to its group");
        }
        None => tracing::warn!(
            viewers = %groups.viewers,
            operators = %groups.operators,
            "neither admin group exists: only root can use the admin socket"
        ),
    }
    Ok(listener)
}

pub async fn serve(listener: UnixListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let caller = Arc::new(Caller::of(&stream));
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                let caller = caller.clone();
                async move { Ok::<_, Infallible>(admin.route(req, &caller).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

fn state_error(e: StateError) -> Reply {
    let status = if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else if e.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    error(status, e.to_string())
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let bytes = Limited::new(req.into_body(), ADMIN_MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

/// Reads a JSON request body, applies `op`, and renders its result or error.
async fn handle<T: DeserializeOwned, R: Serialize>(
    req: Request<Incoming>,
    op: impl FnOnce(T) -> Result<R, StateError>,
) -> Reply {
    match body::<T>(req).await {
        Ok(request) => match op(request) {
            Ok(response) => json(StatusCode::OK, &response),
            Err(e) => state_error(e),
        },
        Err(reply) => reply,
    }
}

impl Admin {
    /// Governed processes may not use the admin API at all, whatever their
    /// uid: file permissions cannot tell an agent from the operator who
    /// started it. When the caller cannot be placed, it is refused too.
    fn refuse_governed_caller(
        &self,
        pid: Option<u32>,
        method: &Method,
        path: &str,
    ) -> Option<Reply> {
        let why = match pid.map(|pid| (pid, self.governor.agent_of_pid(pid))) {
            Some((_, Ok(None))) => return None,
            Some((pid, Ok(Some(agent)))) => format!(
                "refused: the caller (pid {pid}) is governed as agent {agent:?}; \
                 governed processes may not use the admin API"
            ),
            Some((pid, Err(e))) => {
                format!("refused: cannot tell whether the caller (pid {pid}) is governed: {e}")
            }
            None => "refused: the admin socket gave no caller pid".to_owned(),
        };
        tracing::warn!(%method, path, reason = %why, "admin request refused");
        Some(error(StatusCode::FORBIDDEN, why))
    }

    /// A caller without the role the request needs is refused (403),
    /// told which role and group it lacks.
    fn refuse_without_role(&self, caller: &Caller, method: &Method, path: &str) -> Option<Reply> {
        let need = Role::needed_for(method, path);
        let what = path.strip_prefix("/v1/").unwrap_or(path);
        let why = self.groups.authorize(caller, need, what).err()?;
        tracing::warn!(%method, path, uid = caller.uid, reason = %why, "admin request refused");
        Some(error(StatusCode::FORBIDDEN, why))
    }

    /// `caller` is the peer from the socket credentials.
    async fn route(&self, req: Request<Incoming>, caller: &Caller) -> Reply {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let method = req.method().clone();
        tracing::debug!(%method, %path, uid = caller.uid, "admin request");
        if let Some(refusal) = self.refuse_governed_caller(caller.pid, &method, &path) {
            return refusal;
        }
        if let Some(refusal) = self.refuse_without_role(caller, &method, &path) {
            return refusal;
        }
        let caller = (caller.uid, caller.pid);
        let governor = &self.governor;
        let cgroup_reply = |p: &std::path::Path| CgroupResponse {
            cgroup: p.display().to_string(),
            cgroup_id: crate::cgroup::id_of(p).unwrap_or(0),
        };
        match (method, path.as_str()) {
            (Method::GET, STATUS) => self.status(),
            (Method::POST, TAG) => {
                handle(req, |r: TagRequest| {
                    governor
                        .tag(&r.cgroup, &r.agent)
                        .map(|(p, id)| CgroupResponse {
                            cgroup: p.display().to_string(),
                            cgroup_id: id,
                        })
                })
                .await
            }
            (Method::POST, UNTAG) => {
                handle(req, |r: CgroupRequest| {
                    governor.untag(&r.cgroup).map(|p| CgroupResponse {
                        cgroup: p.display().to_string(),
                        cgroup_id: 0,
                    })
                })
                .await
            }
            (Method::POST, p @ (QUARANTINE | RELEASE)) => {
                let on = p == QUARANTINE;
                let policy = self.policies.snapshot();
                let reason = format!("meshctl quarantine (uid {})", caller.0);
                handle(req, |r: TargetRequest| {
                    // An agent is stopped the way its policy says.
                    let mode = policy
                        .quarantine(&r.target)
                        .map_or(QuarantineMode::Isolate, |q| q.mode.into());
                    governor
                        .set_quarantine_as(&r.target, on, mode, &reason)
                        .map(|ids| TargetResponse {
                            target: r.target,
                            cgroups_changed: ids.len(),
                        })
                })
                .await
            }
            (Method::POST, EXEC) => {
                handle(req, |r: ExecRequest| {
                    governor
                        .create_exec_cgroup(&r.agent)
                        .map(|p| cgroup_reply(&p))
                })
                .await
            }
            (Method::POST, EXEC_ATTACH) => {
                handle(req, |r: AttachRequest| {
                    governor
                        .attach_exec_pid(&r.cgroup, r.pid, caller)
                        .map(|()| CgroupResponse {
                            cgroup: r.cgroup,
                            cgroup_id: 0,
                        })
                })
                .await
            }
            (Method::POST, EXEC_DONE) => {
                handle(req, |r: CgroupRequest| {
                    governor
                        .finish_exec_cgroup(&r.cgroup)
                        .map(|()| CgroupResponse {
                            cgroup: r.cgroup,
                            cgroup_id: 0,
                        })
                })
                .await
            }
            (Method::GET, RECORDS) => {
                let n = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("n="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20usize);
                json(
                    StatusCode::OK,
                    &RecordsResponse {
                        records: self.records.tail(n),
                    },
                )
            }
            (Method::GET, BUDGETS) => {
                let agent = query.split('&').find_map(|kv| kv.strip_prefix("agent="));
                self.budgets(agent)
            }
            (Method::POST, POLICY_RELOAD) => self.reload().await,
            (Method::POST, POLICY_EXPLAIN) => match body::<ExplainQuery>(req).await {
                // Against the policy in force, as the proxy would decide.
                Ok(query) => json(StatusCode::OK, &self.policies.snapshot().explain(&query)),
                Err(reply) => reply,
            },
            (_, p) => error(StatusCode::NOT_FOUND, format!("no such endpoint {p}")),
        }
    }

    /// Every budget of the policy in force (of `agent` only, if given),
    /// with what the ledger holds against it.
    fn budgets(&self, agent: Option<&str>) -> Reply {
        let policy = self.policies.snapshot();
        let mut agents: Vec<&str> = policy
            .agents()
            .filter(|a| agent.is_none_or(|want| want == *a))
            .collect();
        agents.sort_unstable();
        if let Some(want) = agent {
            if agents.is_empty() {
                return error(StatusCode::NOT_FOUND, format!("no policy for agent {want}"));
            }
        }
        let agents = agents
            .into_iter()
            .map(|name| AgentBudgets {
                agent: name.to_owned(),
                budgets: policy
                    .budgets(name)
                    .iter()
                    .map(|b| {
                        let view = self.ledger.view(name, b);
                        let amount = |v: u64| match view.unit {
                            Unit::Usd => serde_json::Number::from_f64(v as f64 / 1e9)
                                .unwrap_or_else(|| serde_json::Number::from(0)),
                            Unit::Tokens | Unit::Calls => serde_json::Number::from(v),
                        };
                        BudgetEntry {
                            name: view.name.clone(),
                            unit: view.unit.as_str().to_owned(),
                            limit: amount(view.limit),
                            used: amount(view.used),
                            reserved: amount(view.reserved),
                            remaining: amount(view.remaining),
                            window_secs: view.window_secs,
                            on_exhaust: b.on_exhaust.as_str().to_owned(),
                        }
                    })
                    .collect(),
            })
            .collect();
        json(StatusCode::OK, &BudgetsResponse { agents })
    }

    async fn reload(&self) -> Reply {
        let reloader = self.reloader.clone();
        // Reads files and walks the cgroup tree (selectors): not on the runtime.
        let outcome =
            tokio::task::spawn_blocking(move || reloader.reload("meshctl policy reload")).await;
        match outcome {
            Ok(Ok(reloaded)) => json(
                StatusCode::OK,
                &ReloadResponse {
                    ok: true,
                    generation: reloaded.generation,
                    agents: reloaded.agents,
                    errors: Vec::new(),
                    error: None,
                },
            ),
            Ok(Err(errors)) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReloadResponse {
                    ok: false,
                    generation: self.policies.generation(),
                    agents: self
                        .policies
                        .snapshot()
                        .agents()
                        .map(str::to_owned)
                        .collect(),
                    errors: errors.0.iter().map(PolicyErrorBody::from).collect(),
                    error: Some(errors.to_string()),
                },
            ),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed: {e}"),
            ),
        }
    }

    fn status(&self) -> Reply {
        match self.governor.status(true) {
            Ok(agents) => {
                let layout = self.governor.layout();
                json(
                    StatusCode::OK,
                    &StatusResponse {
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        listen: self.listen.clone(),
                        attach_cgroup: layout.attach_cgroup.display().to_string(),
                        parent_cgroup: layout.parent_cgroup.display().to_string(),
                        policy_agents: self
                            .policies
                            .snapshot()
                            .agents()
                            .map(str::to_owned)
                            .collect(),
                        policy_generation: self.policies.generation(),
                        policy_loaded_unix_ms: self.reloader.loaded_unix_ms(),
                        policy_dir: self.reloader.dir().display().to_string(),
                        active_connections: self.active.count(),
                        agents,
                    },
                )
            }
            Err(e) => state_error(e),
        }
    }
}
