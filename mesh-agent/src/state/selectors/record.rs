//! The selector record: which tags selectors made, kept in `data_dir`, so
//! that a restarted daemon still tells them from explicit tags.
use std::{collections::HashMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{names::decode_name, Governor, StateError};

/// The file form of [`Governor::selector_made`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct SelectorRecord {
    tags: Vec<SelectorRecordEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SelectorRecordEntry {
    cgroup_id: u64,
    agent: String,
}

impl Governor {
    /// Keeps the list of selector-made tags in `path` (in `data_dir`) and
    /// takes over the tags a previous daemon's selectors made, those still
    /// tagged for the same agent. A missing or unreadable file is an empty
    /// list (its tags then count as explicit: never untagged by a selector).
    /// Returns how many tags were taken over.
    pub fn remember_selector_tags_in(&mut self, path: PathBuf) -> Result<usize, StateError> {
        let record: SelectorRecord = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable selector record");
                SelectorRecord::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SelectorRecord::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable selector record");
                SelectorRecord::default()
            }
        };
        let tags = self.tags()?;
        let made: HashMap<u64, String> = record
            .tags
            .into_iter()
            .filter(|e| {
                tags.get(&e.cgroup_id)
                    .is_some_and(|t| decode_name(&t.agent_name) == e.agent)
            })
            .map(|e| (e.cgroup_id, e.agent))
            .collect();
        let adopted = made.len();
        *self
            .selector_made
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) = made;
        self.selector_record = Some(path);
        Ok(adopted)
    }

    /// Writes the selector-made tags to the record (write aside, rename);
    /// a failure is logged: the tags themselves are in the kernel's maps.
    pub(in crate::state) fn save_selector_record(&self, made: &HashMap<u64, String>) {
        let Some(path) = &self.selector_record else {
            return;
        };
        let mut tags: Vec<SelectorRecordEntry> = made
            .iter()
            .map(|(id, agent)| SelectorRecordEntry {
                cgroup_id: *id,
                agent: agent.clone(),
            })
            .collect();
        tags.sort_by_key(|e| e.cgroup_id);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let aside = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&SelectorRecord { tags })
                .map_err(std::io::Error::other)?;
            std::fs::write(&aside, bytes)?;
            std::fs::rename(&aside, path)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %path.display(), error = %e, "saving the selector record");
        }
    }
}
