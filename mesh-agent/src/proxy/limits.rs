//! Per-agent bounds on what the proxy holds for an agent: connections open
//! and requests in flight. One agent that floods the mesh hits its own bound
//! and is refused, with a reason; the others keep being served.
//!
//! A slot is taken when a connection (request) starts and given back when
//! its guard drops, whatever way it ends.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
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

/// What a slot counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connection,
    Request,
}

#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    requests: usize,
}

impl Counts {
    fn of(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Connection => &mut self.connections,
            Kind::Request => &mut self.requests,
        }
    }
}

/// The bounds and what each agent holds now.
#[derive(Debug)]
pub struct AgentLimits {
    max_connections: usize,
    max_requests: usize,
    held: Mutex<HashMap<Arc<str>, Counts>>,
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

/// Gives the slot back when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<AgentLimits>,
    agent: Arc<str>,
    kind: Kind,
}

impl AgentLimits {
    pub fn new(limits: Limits) -> AgentLimits {
        AgentLimits {
            max_connections: limits.connections_per_agent,
            max_requests: limits.requests_per_agent,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot of `kind` for `agent`, or says it is at its bound.
    pub fn enter(self: &Arc<Self>, agent: &Arc<str>, kind: Kind) -> Result<Slot, AtLimit> {
        let (limit, what) = match kind {
            Kind::Connection => (self.max_connections, "connections"),
            Kind::Request => (self.max_requests, "requests"),
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(agent.clone()).or_default().of(kind);
        if *count >= limit {
            return Err(AtLimit {
                agent: agent.clone(),
                what,
                limit,
            });
        }
        *count += 1;
        Ok(Slot {
            limits: self.clone(),
            agent: agent.clone(),
            kind,
        })
    }

    /// What `agent` holds now: (connections, requests).
    pub fn held(&self, agent: &str) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(agent)
            .map_or((0, 0), |c| (c.connections, c.requests))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = held.get_mut(&self.agent) {
            let count = counts.of(self.kind);
            *count = count.saturating_sub(1);
            // Agents that hold nothing take no memory.
            if counts.connections == 0 && counts.requests == 0 {
                held.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_at_its_bound_leaves_the_others_theirs() {
        let limits = Arc::new(AgentLimits::new(Limits {
            connections_per_agent: 2,
            requests_per_agent: 1,
        }));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = limits.enter(&a, Kind::Connection).unwrap();
        let _second = limits.enter(&a, Kind::Connection).unwrap();
        let refused = limits.enter(&a, Kind::Connection).unwrap_err();
        assert_eq!(refused.rule(), "limits.connections");
        assert!(refused.to_string().contains("2 connections"), "{refused}");
        let _b = limits.enter(&b, Kind::Connection).unwrap();
        let _req = limits.enter(&a, Kind::Request).unwrap();
        assert_eq!(
            limits.enter(&a, Kind::Request).unwrap_err().rule(),
            "limits.requests"
        );
        drop(first);
        assert!(limits.enter(&a, Kind::Connection).is_ok());
    }

    #[test]
    fn an_agent_that_holds_nothing_is_forgotten() {
        let limits = Arc::new(AgentLimits::new(Limits {
            connections_per_agent: 4,
            requests_per_agent: 4,
        }));
        let a: Arc<str> = "a".into();
        let slots: Vec<Slot> = (0..3)
            .map(|_| limits.enter(&a, Kind::Request).unwrap())
            .collect();
        assert_eq!(limits.held("a"), (0, 3));
        drop(slots);
        assert_eq!(limits.held("a"), (0, 0));
        assert!(limits.held.lock().unwrap().is_empty());
    }
}
