//! Label values an agent chooses (MCP server and tool names, models) are
//! capped per agent: past [`LABEL_VALUES_PER_AGENT`] distinct values, new
//! ones are counted as `other`, so one agent cannot grow the registry
//! without bound. Refused calls never name a label: their names are the
//! agent's to invent, and the rule that refused them says what they were.
use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::Mutex,
};

use crate::config::LABEL_VALUES_PER_AGENT;

/// The label value names past the cap, and refused calls' names, become.
pub const OTHER: &str = "other";

/// Per agent, the values admitted, by hash (a collision only lets a value
/// share another's slot under the cap): a known value costs no allocation.
#[derive(Default)]
pub struct AgentLabelValues {
    seen: Mutex<HashMap<String, HashSet<u64>>>,
}

impl AgentLabelValues {
    /// Whether `agent` may have the value made of `parts` as label values
    /// (it already has, or is under its cap).
    pub fn admit(&self, agent: &str, parts: &[&str]) -> bool {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(parts);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(values) = seen.get_mut(agent) {
            if values.contains(&hash) {
                return true;
            }
            if values.len() >= LABEL_VALUES_PER_AGENT {
                return false;
            }
            values.insert(hash);
            return true;
        }
        seen.insert(agent.to_owned(), HashSet::from([hash]));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_new_names_are_other_and_known_ones_stay() {
        let labels = AgentLabelValues::default();
        let names: Vec<String> = (0..LABEL_VALUES_PER_AGENT + 5)
            .map(|i| format!("tool-{i}"))
            .collect();
        let admitted: Vec<bool> = names.iter().map(|n| labels.admit("a", &[n])).collect();
        assert!(admitted[..LABEL_VALUES_PER_AGENT].iter().all(|a| *a));
        assert!(!admitted[LABEL_VALUES_PER_AGENT]);
        assert!(labels.admit("a", &["tool-0"]));
        // Another agent has its own cap.
        assert!(labels.admit("b", &["tool-999"]));
    }
}
