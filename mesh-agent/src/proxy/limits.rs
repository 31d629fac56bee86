//! Per-agent bounds on what the proxy holds for an agent: connections open
//! and requests in flight. One agent that floods the mesh hits its own bound
//! and is refused, with a reason; the others keep being served.
//!
//! A slot is taken when a connection (request) starts and given back when
//! its guard drops, whatever way it ends.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

/// The per-agent bounds, as the config file sets them (`limits:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a limits mapping")]
pub struct Limits {
    /// Connections one agent may hold open through the proxy at once.
    pub connections_per_agent: usize,
    /// HTTP requests one agent may have in flight at once (each may buffer
    /// a body up to `max_body_bytes`).
    pub requests_per_agent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_agent: crate::config::DEFAULT_CONNECTIONS_PER_AGENT,
            requests_per_agent: crate::config::DEFAULT_REQUESTS_PER_AGENT,
        }
    }
}

/// What one agent holds now. Shared by its connections, so that a request
/// is counted with two atomic operations and no lock.
#[derive(Debug, Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// The bounds and what each agent holds now.
#[derive(Debug)]
pub struct AgentLimits {
    max_connections: usize,
    max_requests: usize,
    held: Mutex<HashMap<Arc<str>, Arc<Counts>>>,
}

/// An agent is at its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent {agent} already has {limit} {what} open through the mesh (its per-agent limit)")]
pub struct AtLimit {
    pub agent: Arc<str>,
    pub what: &'static str,
    pub limit: usize,
}

impl AtLimit {
    /// The rule a refusal at this limit is recorded under.
    pub fn rule(&self) -> &'static str {
        match self.what {
            "connections" => "limits.connections",
            _ => "limits.requests",
        }
    }
}

/// One of an agent's connections; gives its slot back when dropped, and
/// takes the request slots of the requests it carries.
#[derive(Debug)]
pub struct ConnSlot {
    limits: Arc<AgentLimits>,
    agent: Arc<str>,
    counts: Arc<Counts>,
}

/// One request in flight; gives its slot back when dropped.
#[derive(Debug)]
pub struct RequestSlot {
    counts: Arc<Counts>,
}

impl AgentLimits {
    pub fn new(limits: Limits) -> AgentLimits {
        AgentLimits {
            max_connections: limits.connections_per_agent,
            max_requests: limits.requests_per_agent,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a connection slot for `agent`, or says it is at its bound.
    pub fn connect(self: &Arc<Self>, agent: &Arc<str>) -> Result<ConnSlot, AtLimit> {
        let counts = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let counts = held.entry(agent.clone()).or_default();
            // Counted under the lock, so that the entry is never removed
            // while a connection is being added to it.
            if counts.connections.load(Ordering::Acquire) >= self.max_connections {
                return Err(AtLimit {
                    agent: agent.clone(),
                    what: "connections",
                    limit: self.max_connections,
                });
            }
            counts.connections.fetch_add(1, Ordering::AcqRel);
            counts.clone()
        };
        Ok(ConnSlot {
            limits: self.clone(),
            agent: agent.clone(),
            counts,
        })
    }

    /// What `agent` holds now: (connections, requests).
    pub fn held(&self, agent: &str) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(agent).map_or((0, 0), |c| {
            (
                c.connections.load(Ordering::Acquire),
                c.requests.load(Ordering::Acquire),
            )
        })
    }
}

impl ConnSlot {
    /// Takes a request slot of this connection's agent, or says it is at
    /// its bound.
    pub fn request(&self) -> Result<RequestSlot, AtLimit> {
        let before = self.counts.requests.fetch_add(1, Ordering::AcqRel);
        if before >= self.limits.max_requests {
            self.counts.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(AtLimit {
                agent: self.agent.clone(),
                what: "requests",
                limit: self.limits.max_requests,
            });
        }
        Ok(RequestSlot {
            counts: self.counts.clone(),
        })
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.counts.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|p| p.into_inner());
        let left = self.counts.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        // An agent with no connection left takes no memory (its requests
        // ride on connections, so none are left either).
        if left == 0 {
            held.remove(&self.agent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, requests: usize) -> Arc<AgentLimits> {
        Arc::new(AgentLimits::new(Limits {
            connections_per_agent: connections,
            requests_per_agent: requests,
        }))
    }

    #[test]
    fn one_agent_at_its_bound_leaves_the_others_theirs() {
        let limits = limits(2, 1);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = limits.connect(&a).unwrap();
        let second = limits.connect(&a).unwrap();
        let refused = limits.connect(&a).unwrap_err();
        assert_eq!(refused.rule(), "limits.connections");
        assert!(refused.to_string().contains("2 connections"), "{refused}");
        let _b = limits.connect(&b).unwrap();
        // Requests are the agent's, whichever connection carries them.
        let _req = first.request().unwrap();
        assert_eq!(second.request().unwrap_err().rule(), "limits.requests");
        drop(first);
        assert!(limits.connect(&a).is_ok());
    }

    #[test]
    fn an_agent_that_holds_nothing_is_forgotten() {
        let limits = limits(4, 4);
        let a: Arc<str> = "a".into();
        let conn = limits.connect(&a).unwrap();
        let requests: Vec<RequestSlot> = (0..3).map(|_| conn.request().unwrap()).collect();
        assert_eq!(limits.held("a"), (1, 3));
        drop(requests);
        assert_eq!(limits.held("a"), (1, 0));
        drop(conn);
        assert_eq!(limits.held("a"), (0, 0));
        assert!(limits.held.lock().unwrap().is_empty());
    }
}
