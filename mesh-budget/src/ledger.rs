//! The ledger: per-agent budget state in memory, reservations, settlement,
//! and the hand-off of settled spend to the store.
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use super::store::{self, CommitWaiter, SettledRow, Store};
use super::window::{duration_ms, BudgetState};
use super::{limit_in_unit, BudgetError, BudgetView, Clock, Exhausted, Spend, Unit};
use mesh_policy::Budget;

/// Budgets a single reservation can charge without a heap allocation.
const INLINE_CHARGED: usize = 8;

/// Spend reserved, settled and persisted per (agent, budget name); see the
/// module documentation for the rules. `Send + Sync`: share it in an `Arc`.
pub struct Ledger {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    agents: RwLock<HashMap<Arc<str>, Arc<AgentEntry>>>,
    /// None for an in-memory ledger.
    store: Option<Store>,
}

pub(super) struct AgentEntry {
    pub name: Arc<str>,
    pub state: Mutex<AgentState>,
}

/// All budgets of one agent, under its one mutex.
#[derive(Default)]
pub(super) struct AgentState {
    /// Never shrinks: a reservation refers to its budgets by index. A budget
    /// a policy no longer names keeps its (small) state.
    pub budgets: Vec<BudgetState>,
}

impl AgentState {
    fn index_of(&self, name: &str) -> Option<usize> {
        self.budgets.iter().position(|b| &*b.name == name)
    }

    pub fn index_or_insert(&mut self, name: &str) -> usize {
        match self.index_of(name) {
            Some(i) => i,
            None => {
                self.budgets.push(BudgetState::new(Arc::from(name)));
                self.budgets.len() - 1
            }
        }
    }
}

fn lock(entry: &AgentEntry) -> MutexGuard<'_, AgentState> {
    // The state is consistent between statements; a panic elsewhere while
    // holding the lock leaves nothing half-done that matters more than
    // refusing every later call of the agent.
    entry.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settlement counts of a store-backed ledger since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitStats {
    /// Write transactions committed (each with fsync).
    pub transactions: u64,
    /// Settlements those transactions carried (their Commits resolved Ok).
    pub settlements: u64,
    /// Transactions that failed (their Commits resolved with the error).
    pub failed_transactions: u64,
}

impl Ledger {
    /// A ledger that keeps nothing across restarts; its Commits are ready at
    /// once.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Ledger {
        Ledger {
            shared: Arc::new(Shared {
                clock,
                agents: RwLock::new(HashMap::new()),
                store: None,
            }),
        }
    }

    /// Opens (creates) the redb file, loads persisted spend, starts the
    /// group-commit thread.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Ledger, BudgetError> {
        let (store, loaded) = store::open(path, Arc::clone(&clock))?;
        let mut agents: HashMap<Arc<str>, Arc<AgentEntry>> = HashMap::new();
        for (agent, budgets) in loaded {
            let name: Arc<str> = Arc::from(agent);
            let mut state = AgentState::default();
            for (budget, slots) in budgets {
                let index = state.index_or_insert(&budget);
                for slot in slots {
                    state.budgets[index].add_loaded(slot);
                }
            }
            agents.insert(
                Arc::clone(&name),
                Arc::new(AgentEntry {
                    name,
                    state: Mutex::new(state),
                }),
            );
        }
        Ok(Ledger {
            shared: Arc::new(Shared {
                clock,
                agents: RwLock::new(agents),
                store: Some(store),
            }),
        })
    }

    fn agent(&self, agent: &str) -> Arc<AgentEntry> {
        {
            let agents = self
                .shared
                .agents
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = agents.get(agent) {
                return Arc::clone(entry);
            }
        }
        let mut agents = self
            .shared
            .agents
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(agents.entry(Arc::from(agent)).or_insert_with_key(|name| {
            Arc::new(AgentEntry {
                name: Arc::clone(name),
                state: Mutex::new(AgentState::default()),
            })
        }))
    }

    /// Reserves `spend` (each budget charged in its own unit) against every
    /// budget in `budgets` of `agent`, atomically: all or none. The caller
    /// already picked which budgets apply. A budget named twice is charged
    /// once. Refused with the first budget (in `budgets` order) that cannot
    /// take it.
    pub fn reserve(
        &self,
        agent: &str,
        budgets: &[&Budget],
        spend: Spend,
    ) -> Result<Reservation, Exhausted> {
        let entry = self.agent(agent);
        let now_ms = self.shared.clock.now_ms();
        let mut charged = Charged::default();
        {
            let mut state = lock(&entry);
            for budget in budgets {
                let index = state.index_or_insert(&budget.name);
                if charged.contains(index) {
                    continue;
                }
                let window_ms = duration_ms(budget.window);
                let budget_state = &mut state.budgets[index];
                budget_state.set_window(window_ms);
                budget_state.expire(now_ms);
                let unit = Unit::of(&budget.limit);
                let limit = limit_in_unit(&budget.limit);
                let used = budget_state.used.in_unit(unit);
                let reserved = budget_state.reserved.in_unit(unit);
                let requested = spend.in_unit(unit);
                if used.saturating_add(reserved).saturating_add(requested) > limit {
                    let retry_after = if requested > limit {
                        None
                    } else {
                        let excess = used
                            .saturating_add(reserved)
                            .saturating_add(requested)
                            .saturating_sub(limit);
                        Some(match budget_state.time_until_freed(unit, excess, now_ms) {
                            Some(wait) => wait,
                            // Reservations keep it out even once the settled
                            // spend has left; they end with their calls.
                            None => budget_state
                                .time_until_empty(now_ms)
                                .unwrap_or(Duration::ZERO)
                                .max(Duration::from_secs(1)),
                        })
                    };
                    return Err(Exhausted {
                        budget: budget.name.clone(),
                        unit,
                        limit,
                        used,
                        reserved,
                        requested,
                        window: budget.window,
                        on_exhaust: budget.on_exhaust,
                        retry_after,
                    });
                }
                charged.push(index);
            }
            for index in charged.iter() {
                let budget_state = &mut state.budgets[index];
                budget_state.reserved = budget_state.reserved.saturating_add(spend);
            }
        }
        Ok(Reservation {
            shared: Arc::clone(&self.shared),
            agent: entry,
            charged,
            spend,
            finished: false,
        })
    }

    /// One budget's state, for `meshctl budget show` and the
    /// `mesh_budget_remaining` gauge. Applies the budget's window (as a
    /// reservation would); an agent or budget never charged shows zeros.
    pub fn view(&self, agent: &str, budget: &Budget) -> BudgetView {
        let unit = Unit::of(&budget.limit);
        let limit = limit_in_unit(&budget.limit);
        let entry = self
            .shared
            .agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
            .cloned();
        let (used, reserved) = match entry {
            None => (0, 0),
            Some(entry) => {
                let mut state = lock(&entry);
                match state.index_of(&budget.name) {
                    None => (0, 0),
                    Some(index) => {
                        let budget_state = &mut state.budgets[index];
                        budget_state.set_window(duration_ms(budget.window));
                        budget_state.expire(self.shared.clock.now_ms());
                        (
                            budget_state.used.in_unit(unit),
                            budget_state.reserved.in_unit(unit),
                        )
                    }
                }
            }
        };
        BudgetView {
            name: budget.name.to_string(),
            unit,
            limit,
            used,
            reserved,
            remaining: limit.saturating_sub(used.saturating_add(reserved)),
            window_secs: budget.window.as_secs(),
            on_exhaust: budget.on_exhaust,
        }
    }

    /// Stops the commit thread after flushing what is queued (daemon
    /// shutdown). Idempotent; a settlement after it is counted in memory and
    /// its Commit resolves with [`BudgetError::Closed`].
    pub fn close(&self) {
        if let Some(store) = &self.shared.store {
            store.close();
        }
    }

    /// Transactions and settlements the store has committed (zeros in
    /// memory): the group commit's batch size is their ratio.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared
            .store
            .as_ref()
            .map_or_else(CommitStats::default, Store::stats)
    }

    #[cfg(test)]
    pub(super) fn slot_count(&self, agent: &str, budget: &str) -> usize {
        let entry = self.agent(agent);
        let state = lock(&entry);
        state
            .index_of(budget)
            .map_or(0, |i| state.budgets[i].slot_count())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Outstanding Reservations hold the shared state, not the thread:
        // flush and stop it now, while the owner waits.
        self.close();
    }
}

/// Indices of the budgets (in the agent's state) a reservation charged.
#[derive(Debug, Default)]
struct Charged {
    len: usize,
    inline: [u32; INLINE_CHARGED],
    more: Vec<u32>,
}

impl Charged {
    fn push(&mut self, index: usize) {
        // An agent has far fewer than 2^32 budget names.
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        if self.len < INLINE_CHARGED {
            self.inline[self.len] = index;
        } else {
            self.more.push(index);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.inline[..self.len.min(INLINE_CHARGED)]
            .iter()
            .chain(&self.more)
            .map(|&i| i as usize)
    }

    fn contains(&self, index: usize) -> bool {
        self.iter().any(|i| i == index)
    }
}

/// Spend held against an agent's budgets until the call ends. Settle it
/// with the actual spend or release it; dropping it releases it.
#[must_use = "a reservation dropped at once is released at once"]
pub struct Reservation {
    shared: Arc<Shared>,
    agent: Arc<AgentEntry>,
    charged: Charged,
    spend: Spend,
    /// Settled or released: Drop has nothing left to do.
    finished: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("agent", &self.agent.name)
            .field("spend", &self.spend)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub fn reserved(&self) -> Spend {
        self.spend
    }

    /// Replaces the reservation by the actual spend (which may be larger
    /// than reserved: the caller records that) and queues it for the group
    /// commit. Returns at once; await the Commit before the agent sees the
    /// end of its response.
    pub fn settle(mut self, actual: Spend) -> Commit {
        self.finished = true;
        let now_ms = self.shared.clock.now_ms();
        let persist = self.shared.store.is_some() && !actual.is_zero();
        let mut rows = Vec::new();
        {
            let mut state = lock(&self.agent);
            for index in self.charged.iter() {
                let Some(budget_state) = state.budgets.get_mut(index) else {
                    continue;
                };
                budget_state.reserved = budget_state.reserved.saturating_sub(self.spend);
                budget_state.expire(now_ms);
                let key = budget_state.add_settled(now_ms, actual);
                if persist {
                    rows.push(SettledRow {
                        budget: Arc::clone(&budget_state.name),
                        key,
                    });
                }
            }
        }
        match &self.shared.store {
            Some(store) if persist => store.queue(Arc::clone(&self.agent.name), rows, actual),
            _ => Commit::ready(),
        }
    }

    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut state = lock(&self.agent);
        for index in self.charged.iter() {
            if let Some(budget_state) = state.budgets.get_mut(index) {
                budget_state.reserved = budget_state.reserved.saturating_sub(self.spend);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release_now();
    }
}

/// Resolves when the settlement is durable (redb commit with fsync);
/// immediately for an in-memory ledger.
#[must_use = "the settlement is durable only when the Commit resolves Ok"]
pub struct Commit {
    state: CommitState,
}

enum CommitState {
    Done(Option<Result<(), BudgetError>>),
    Waiting(CommitWaiter),
}

impl Commit {
    /// A Commit with nothing to wait for.
    pub fn ready() -> Commit {
        Commit {
            state: CommitState::Done(Some(Ok(()))),
        }
    }

    pub(super) fn waiting(waiter: CommitWaiter) -> Commit {
        Commit {
            state: CommitState::Waiting(waiter),
        }
    }

    /// Blocks the calling thread until the Commit resolves: for threads
    /// outside an async runtime (tests, benchmarks); async code awaits it.
    pub fn wait(self) -> Result<(), BudgetError> {
        match self.state {
            CommitState::Done(result) => result.unwrap_or(Ok(())),
            CommitState::Waiting(waiter) => waiter.wait(),
        }
    }
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            CommitState::Done(_) => "done",
            CommitState::Waiting(_) => "waiting",
        };
        f.debug_struct("Commit").field("state", &state).finish()
    }
}

impl Future for Commit {
    type Output = Result<(), BudgetError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            // Polled again after Ready: Ok, as futures that complete once
            // may answer anything.
            CommitState::Done(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            CommitState::Waiting(waiter) => waiter.poll(cx),
        }
    }
}
