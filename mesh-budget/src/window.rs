//! One budget's rolling window: settled spend in slots, a running total of
//! them, and the outstanding reservations.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Spend, Unit};

/// The shortest slot: a 1m window has 60 slots of 1 s.
pub(super) const MIN_SLOT_MS: u64 = 1_000;
/// Slots per window.
const SLOTS_PER_WINDOW: u64 = 60;

/// The slot length for a window: window/60, at least [`MIN_SLOT_MS`].
pub(super) fn slot_len_ms(window_ms: u64) -> u64 {
    (window_ms / SLOTS_PER_WINDOW).max(MIN_SLOT_MS)
}

pub(super) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Spend settled between `start_ms` and `start_ms + len_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub start_ms: u64,
    pub len_ms: u64,
    pub spend: Spend,
}

impl Slot {
    pub fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.len_ms)
    }
}

/// Where a settlement went: the slot row to add it to on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotKey {
    pub start_ms: u64,
    pub len_ms: u64,
}

/// The state of one (agent, budget name).
#[derive(Debug)]
pub(super) struct BudgetState {
    pub name: Arc<str>,
    /// The window of the policy last seen for this budget; None for a
    /// budget loaded from disk that no call has named yet (nothing expires
    /// until then).
    window_ms: Option<u64>,
    /// Ordered by start, and (the invariant expiry relies on) by strictly
    /// increasing end.
    slots: VecDeque<Slot>,
    /// The sum of `slots`.
    pub used: Spend,
    /// Outstanding reservations.
    pub reserved: Spend,
}

impl BudgetState {
    pub fn new(name: Arc<str>) -> BudgetState {
        BudgetState {
            name,
            window_ms: None,
            slots: VecDeque::new(),
            used: Spend::default(),
            reserved: Spend::default(),
        }
    }

    /// Applies the policy's window (it may have changed since the last call).
    pub fn set_window(&mut self, window_ms: u64) {
        self.window_ms = Some(window_ms);
    }

    /// Drops the slots whose spend has left the window: those with
    /// `end + window <= now`. Ends increase along the deque, so they are
    /// all at its front.
    pub fn expire(&mut self, now_ms: u64) {
        let Some(window_ms) = self.window_ms else {
            return;
        };
        while let Some(front) = self.slots.front() {
            if front.end_ms().saturating_add(window_ms) > now_ms {
                break;
            }
            self.used = self.used.saturating_sub(front.spend);
            self.slots.pop_front();
        }
    }

    /// Adds settled spend at `now_ms` to its slot and says which.
    ///
    /// The last slot takes it while it has not ended (also when its length
    /// is that of an older window, or the clock stepped back): spend then
    /// counts at least as long as in its own slot. Otherwise a new slot
    /// starts at `now` rounded down to the slot length; it ends after the
    /// last slot, which keeps ends increasing.
    pub fn add_settled(&mut self, now_ms: u64, spend: Spend) -> SlotKey {
        self.used = self.used.saturating_add(spend);
        if let Some(last) = self.slots.back_mut() {
            if last.end_ms() > now_ms {
                last.spend = last.spend.saturating_add(spend);
                return SlotKey {
                    start_ms: last.start_ms,
                    len_ms: last.len_ms,
                };
            }
        }
        let len_ms = slot_len_ms(self.window_ms.unwrap_or(0));
        let start_ms = now_ms - now_ms % len_ms;
        self.slots.push_back(Slot {
            start_ms,
            len_ms,
            spend,
        });
        SlotKey { start_ms, len_ms }
    }

    /// Adds a slot read from disk. Rows arrive ordered by start; one that
    /// ends no later than the last slot is merged into it (its spend then
    /// counts as long as the last slot's, which is at least as long).
    pub fn add_loaded(&mut self, slot: Slot) {
        self.used = self.used.saturating_add(slot.spend);
        if let Some(last) = self.slots.back_mut() {
            if slot.end_ms() <= last.end_ms() {
                last.spend = last.spend.saturating_add(slot.spend);
                return;
            }
        }
        self.slots.push_back(slot);
    }

    /// How long until `excess` (in `unit`) of the settled spend has left the
    /// window, from `now_ms`; None if all of it leaving frees less.
    pub fn time_until_freed(&self, unit: Unit, excess: u64, now_ms: u64) -> Option<Duration> {
        let window_ms = self.window_ms?;
        let mut freed = 0u64;
        for slot in &self.slots {
            freed = freed.saturating_add(slot.spend.in_unit(unit));
            if freed >= excess {
                let at = slot.end_ms().saturating_add(window_ms);
                return Some(Duration::from_millis(at.saturating_sub(now_ms)));
            }
        }
        None
    }

    /// When the last settled spend leaves the window, from `now_ms`.
    pub fn time_until_empty(&self, now_ms: u64) -> Option<Duration> {
        let window_ms = self.window_ms?;
        let last = self.slots.back()?;
        let at = last.end_ms().saturating_add(window_ms);
        Some(Duration::from_millis(at.saturating_sub(now_ms)))
    }

    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}
