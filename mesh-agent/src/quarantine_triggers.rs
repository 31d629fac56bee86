//! `quarantine.triggers`: an agent refused `denials` times within `within`
//! is quarantined in the kernel, in its policy's mode (isolate, or freeze),
//! and a record says which trigger tripped and names the refusals that
//! tripped it. Refusals are seen where every record passes
//! ([`RecordLog`](crate::records::RecordLog)'s observer), so that no part of
//! the data path has to know about triggers.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use crate::{
    config::{QUARANTINE_AFTER_REFUSAL, QUARANTINE_TRIGGER_MAX_REFUSALS},
    policy::PolicyStore,
    records::{unix_ms, ConnectionRecord, RecordObserver, Verdict},
    state::{Governor, QuarantineMode},
};

pub struct QuarantineTriggers {
    governor: Arc<Governor>,
    policies: Arc<PolicyStore>,
    /// Per agent: the recent refusals (when, record id), oldest first.
    refusals: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl QuarantineTriggers {
    pub fn new(governor: Arc<Governor>, policies: Arc<PolicyStore>) -> QuarantineTriggers {
        QuarantineTriggers {
            governor,
            policies,
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a refusal of `agent`; when a trigger trips, returns its index,
    /// the refusals that tripped it and the mode to quarantine in.
    fn count(&self, agent: &str, record_id: u64, now: Instant) -> Option<Trip> {
        let policy = self.policies.snapshot();
        let quarantine = policy.quarantine(agent)?;
        if quarantine.triggers.is_empty() || self.governor.agent_quarantine(agent).is_some() {
            return None;
        }
        let longest = quarantine.triggers.iter().map(|t| t.within).max()?;
        let mut all = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let seen = all.entry(agent.to_owned()).or_default();
        seen.push_back((now, record_id));
        while seen
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > longest)
            || seen.len() > QUARANTINE_TRIGGER_MAX_REFUSALS
        {
            seen.pop_front();
        }
        let (index, trigger, ids) =
            quarantine
                .triggers
                .iter()
                .enumerate()
                .find_map(|(index, trigger)| {
                    let ids: Vec<u64> = seen
                        .iter()
                        .filter(|(at, _)| now.duration_since(*at) <= trigger.within)
                        .map(|(_, id)| *id)
                        .collect();
                    (ids.len() as u64 >= trigger.denials).then_some((index, trigger, ids))
                })?;
        all.remove(agent);
        Some(Trip {
            rule: format!("quarantine.triggers[{index}]"),
            reason: format!(
                "{} refusals within {}s (records {}): agent quarantined ({})",
                ids.len(),
                trigger.within.as_secs_f64(),
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                match QuarantineMode::from(quarantine.mode) {
                    QuarantineMode::Isolate => "isolate",
                    QuarantineMode::Freeze => "freeze",
                }
            ),
            mode: quarantine.mode.into(),
        })
    }

    /// Quarantines `agent` shortly after the refusal that tripped the
    /// trigger was handed to it ([`QUARANTINE_AFTER_REFUSAL`]): the kernel
    /// quarantine drops its traffic, and the refusal should reach it first.
    fn quarantine(&self, agent: String, trip: &Trip) {
        let governor = self.governor.clone();
        let (mode, reason) = (trip.mode, format!("{}: {}", trip.rule, trip.reason));
        let apply = move || {
            if let Err(e) = governor.set_quarantine_as(&agent, true, mode, &reason) {
                tracing::warn!(agent, error = %e, "quarantine trigger tripped; quarantine failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(QUARANTINE_AFTER_REFUSAL).await;
                    apply();
                });
            }
            Err(_) => apply(),
        }
    }
}

struct Trip {
    rule: String,
    reason: String,
    mode: QuarantineMode,
}

impl RecordObserver for QuarantineTriggers {
    fn observe(&self, record: &ConnectionRecord) -> Option<ConnectionRecord> {
        if record.verdict != Verdict::RefusedPolicy {
            return None;
        }
        let agent = record.agent.as_deref()?;
        let trip = self.count(agent, record.id, Instant::now())?;
        tracing::warn!(agent, rule = %trip.rule, reason = %trip.reason, "quarantine trigger tripped");
        self.quarantine(agent.to_owned(), &trip);
        Some(ConnectionRecord {
            agent: Some(agent.to_owned()),
            reason: Some(trip.reason.clone()),
            ..ConnectionRecord::new(
                0,
                unix_ms(SystemTime::now()),
                None,
                Verdict::Quarantined,
                trip.rule,
            )
        })
    }
}
