//! What servers with `trust_annotations: true` said of their tools in
//! `tools/list`, as last seen by this daemon.
//!
//! This is state learned from traffic, not policy: it must survive a policy
//! reload. [`super::PolicySet`] holds it in an `Arc`; a reload carries it
//! over with [`super::PolicySet::with_annotations_from`].
//!
//! Keyed by agent, then by the server's declared address as written
//! (`mcp[].address`): what one agent's traffic taught is used for that agent
//! only, so an agent that reaches a fake server under a declared name (or
//! replays a crafted `tools/list`) cannot reclassify tools for the others. A
//! reload that keeps the address keeps the annotations. A lookup borrows the
//! keys and never allocates.

use std::collections::HashMap;
use std::sync::RwLock;

use super::model::ToolClass;
use super::ToolAnnotations;

/// At most this many tools are remembered per server: a server cannot make
/// the daemon grow without bound by listing ever new names.
pub const MAX_TOOLS_PER_SERVER: usize = 4096;

/// What one server's annotations say: class by tool name.
type ToolClasses = HashMap<Box<str>, ToolClass>;

/// Tool classes by server address, then tool name.
type Servers = HashMap<Box<str>, ToolClasses>;

/// Tool classes by agent, server address, then tool name.
#[derive(Debug, Default)]
pub struct AnnotationStore {
    agents: RwLock<HashMap<Box<str>, Servers>>,
}

impl AnnotationStore {
    pub fn new() -> AnnotationStore {
        AnnotationStore::default()
    }

    /// The class `tool` has by its annotations on the server at `address`,
    /// as `agent` saw them: `readOnlyHint: true` is read, any other listed
    /// tool is write.
    pub fn class(&self, agent: &str, address: &str, tool: &str) -> Option<ToolClass> {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents.get(agent)?.get(address)?.get(tool).copied()
    }

    /// Records one `tools/list` page `agent` received. Pages are merged (a
    /// paginated list comes in several responses); a tool listed again is
    /// reclassified. Agents and servers are bounded by the policy (only
    /// declared servers with `trust_annotations` are observed).
    pub fn observe(&self, agent: &str, address: &str, tools: &[ToolAnnotations]) {
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        let known = agents
            .entry(agent.into())
            .or_default()
            .entry(address.into())
            .or_default();
        for tool in tools {
            let class = if tool.read_only == Some(true) {
                ToolClass::Read
            } else {
                ToolClass::Write
            };
            if let Some(c) = known.get_mut(tool.name.as_str()) {
                *c = class;
            } else if known.len() < MAX_TOOLS_PER_SERVER {
                known.insert(tool.name.as_str().into(), class);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, read_only: Option<bool>) -> ToolAnnotations {
        ToolAnnotations {
            name: name.into(),
            read_only,
            destructive: None,
        }
    }

    #[test]
    fn annotations_classify_and_merge() {
        let store = AnnotationStore::new();
        store.observe(
            "a",
            "127.0.0.2:7001",
            &[
                tool("get", Some(true)),
                tool("put", Some(false)),
                tool("x", None),
            ],
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "get"),
            Some(ToolClass::Read)
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "put"),
            Some(ToolClass::Write)
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "x"),
            Some(ToolClass::Write)
        );
        assert_eq!(store.class("a", "127.0.0.2:7001", "y"), None);
        assert_eq!(store.class("a", "127.0.0.2:7002", "get"), None);
        // A later page adds; a tool listed again changes class.
        store.observe(
            "a",
            "127.0.0.2:7001",
            &[tool("get", None), tool("y", Some(true))],
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "get"),
            Some(ToolClass::Write)
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "y"),
            Some(ToolClass::Read)
        );
        assert_eq!(
            store.class("a", "127.0.0.2:7001", "put"),
            Some(ToolClass::Write)
        );
    }

    #[test]
    fn annotations_are_bounded_per_server() {
        let store = AnnotationStore::new();
        let many: Vec<ToolAnnotations> = (0..MAX_TOOLS_PER_SERVER + 10)
            .map(|i| tool(&format!("t{i}"), Some(true)))
            .collect();
        store.observe("a", "s:1", &many);
        assert_eq!(store.class("a", "s:1", "t0"), Some(ToolClass::Read));
        assert_eq!(
            store.class("a", "s:1", &format!("t{}", MAX_TOOLS_PER_SERVER)),
            None
        );
    }

    #[test]
    fn what_one_agent_saw_does_not_classify_tools_for_another() {
        let store = AnnotationStore::new();
        store.observe("honest", "tools.corp:443", &[tool("wipe", Some(false))]);
        // Another agent reaches a fake server under the same declared name
        // and is told the destructive tool is read-only.
        store.observe("rogue", "tools.corp:443", &[tool("wipe", Some(true))]);
        assert_eq!(
            store.class("honest", "tools.corp:443", "wipe"),
            Some(ToolClass::Write)
        );
        assert_eq!(
            store.class("rogue", "tools.corp:443", "wipe"),
            Some(ToolClass::Read)
        );
        assert_eq!(store.class("third", "tools.corp:443", "wipe"), None);
    }
}
