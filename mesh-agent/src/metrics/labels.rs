//! Label values an agent chooses (MCP server and tool names, models) are
//! capped per agent: past [`LABEL_VALUES_PER_AGENT`] distinct values, new
//! ones are counted as `other`, so one agent cannot grow the registry
//! without bound. Refused calls never name a label: their names are the
//! agent's to invent, and the rule that refused them says what they were.
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::config::LABEL_VALUES_PER_AGENT;

/// The label value names collapse into.
pub const OTHER: &str = "other";

#[derive(Default)]
pub struct AgentLabelValues {
    seen: Mutex<HashMap<String, HashSet<String>>>,
}

impl AgentLabelValues {
    /// `value` when `agent` may have it as a label value (already has it,
    /// or is under its cap), else [`OTHER`].
    pub fn admit<'a>(&self, agent: &str, value: &'a str) -> &'a str {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let values = seen.entry(agent.to_owned()).or_default();
        if values.contains(value) {
            return value;
        }
        if values.len() >= LABEL_VALUES_PER_AGENT {
            return OTHER;
        }
        values.insert(value.to_owned());
        value
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
        let admitted: Vec<&str> = names.iter().map(|n| labels.admit("a", n)).collect();
        assert_eq!(admitted[0], "tool-0");
        assert_eq!(
            admitted[LABEL_VALUES_PER_AGENT - 1],
            names[LABEL_VALUES_PER_AGENT - 1]
        );
        assert_eq!(admitted[LABEL_VALUES_PER_AGENT], OTHER);
        assert_eq!(labels.admit("a", "tool-0"), "tool-0");
        // Another agent has its own cap.
        assert_eq!(labels.admit("b", "tool-999"), "tool-999");
    }
}
