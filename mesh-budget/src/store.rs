//! The redb file and its group-commit thread.
//!
//! One table, `spend`: key = agent, budget name and slot start; value = the
//! slot's length and its settled spend in every unit. Both are plain bytes
//! decoded by hand, so a damaged row is skipped rather than trusted (redb's
//! fixed-width types would panic on a short value).
//!
//! - key: `u16 BE` agent length, agent (UTF-8), `u16 BE` budget length,
//!   budget (UTF-8), `u64 BE` slot start (unix ms): the rows of one budget
//!   are contiguous and ordered by start;
//! - value: a format byte (`1`), then `u64 LE` slot length (ms), tokens,
//!   nano-USD and calls.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::ledger::{Commit, CommitStats};
use super::window::{Slot, SlotKey};
use super::{BudgetError, Clock, Spend};

const SPEND: TableDefinition<&[u8], &[u8]> = TableDefinition::new("spend");
const VALUE_FORMAT: u8 = 1;
const VALUE_LEN: usize = 1 + 4 * 8;
/// The longest window a policy can set: rows older than it (plus their
/// slot) can never count again.
const RETAIN_MS: u64 = 30 * 24 * 3_600 * 1_000;
/// How often the writer deletes rows older than [`RETAIN_MS`] while it runs.
const PRUNE_EVERY_MS: u64 = 3_600 * 1_000;

/// Settled spend read at open: agent -> budget -> slots ordered by start.
pub(super) type Loaded = BTreeMap<String, BTreeMap<String, Vec<Slot>>>;

/// One budget's slot a settlement went to.
pub(super) struct SettledRow {
    pub budget: Arc<str>,
    pub key: SlotKey,
}

/// One settlement on its way to the writer.
struct Settlement {
    agent: Arc<str>,
    rows: Vec<SettledRow>,
    spend: Spend,
    done: CommitCompleter,
}

enum Message {
    Settle(Settlement),
    /// Write what is queued, then stop.
    Close,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    settlements: AtomicU64,
    failed_transactions: AtomicU64,
}

pub(super) struct Store {
    path: Arc<Path>,
    sender: Sender<Message>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

fn open_error(path: &Path, source: impl Into<redb::Error>) -> BudgetError {
    BudgetError::Open {
        path: path.to_path_buf(),
        source: Arc::new(source.into()),
    }
}

/// Opens (creates) the file, reads the spend still in reach of a window,
/// deletes the rest, and starts the writer thread.
pub(super) fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<(Store, Loaded), BudgetError> {
    let database = Database::create(path).map_err(|e| open_error(path, e))?;
    let now_ms = clock.now_ms();
    let loaded = load(&database, now_ms).map_err(|e| open_error(path, e))?;
    let path: Arc<Path> = Arc::from(path);
    let (sender, receiver) = mpsc::channel();
    let counters = Arc::new(Counters::default());
    let writer = Writer {
        database,
        path: Arc::clone(&path),
        counters: Arc::clone(&counters),
        clock,
        last_prune_ms: now_ms,
    };
    let handle = thread::Builder::new()
        .name("budget-commit".into())
        .spawn(move || writer.run(receiver))
        .map_err(|e| open_error(&path, e))?;
    Ok((
        Store {
            path,
            sender,
            writer: Mutex::new(Some(handle)),
            counters,
        },
        loaded,
    ))
}

/// Reads every row younger than [`RETAIN_MS`] + its slot and deletes the
/// older ones, in one transaction.
fn load(database: &Database, now_ms: u64) -> Result<Loaded, redb::Error> {
    let cutoff_ms = now_ms.saturating_sub(RETAIN_MS);
    let mut transaction = database.begin_write()?;
    transaction.set_durability(Durability::Immediate)?;
    let mut loaded = Loaded::new();
    {
        let mut table = transaction.open_table(SPEND)?;
        let mut stale: Vec<Vec<u8>> = Vec::new();
        let mut skipped = 0usize;
        for item in table.iter()? {
            let (key, value) = item?;
            let (Some(row_key), Some(row)) = (decode_key(key.value()), decode_value(value.value()))
            else {
                skipped += 1;
                continue;
            };
            let slot = Slot {
                start_ms: row_key.start_ms,
                len_ms: row.len_ms,
                spend: row.spend,
            };
            if slot.end_ms() <= cutoff_ms {
                stale.push(key.value().to_vec());
                continue;
            }
            loaded
                .entry(row_key.agent.to_owned())
                .or_default()
                .entry(row_key.budget.to_owned())
                .or_default()
                .push(slot);
        }
        if skipped > 0 {
            tracing::warn!(
                rows = skipped,
                "budget store: skipped rows that do not decode (not written by this version of mesh?)"
            );
        }
        for key in &stale {
            table.remove(key.as_slice())?;
        }
    }
    transaction.commit()?;
    for budgets in loaded.values_mut() {
        for slots in budgets.values_mut() {
            slots.sort_by_key(|s| s.start_ms);
        }
    }
    Ok(loaded)
}

impl Store {
    /// Hands a settlement to the writer; the Commit resolves when it is
    /// durable.
    pub fn queue(&self, agent: Arc<str>, rows: Vec<SettledRow>, spend: Spend) -> Commit {
        let (done, waiter) = commit_pair(Arc::clone(&self.path));
        let message = Message::Settle(Settlement {
            agent,
            rows,
            spend,
            done,
        });
        // If the writer has stopped (close), send hands the message back
        // and its completer, dropped, resolves the waiter with Closed.
        let _ = self.sender.send(message);
        Commit::waiting(waiter)
    }

    pub fn close(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // Fails only if the writer is gone already; joining tells.
            let _ = self.sender.send(Message::Close);
            if handle.join().is_err() {
                tracing::error!(path = %self.path.display(), "budget store writer panicked");
            }
        }
    }

    pub fn stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            settlements: self.counters.settlements.load(Ordering::Relaxed),
            failed_transactions: self.counters.failed_transactions.load(Ordering::Relaxed),
        }
    }
}

/// The thread that owns the database.
struct Writer {
    database: Database,
    path: Arc<Path>,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    last_prune_ms: u64,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Message>) {
        let mut batch: Vec<Settlement> = Vec::new();
        loop {
            // Every Store (and so every Sender) gone counts as Close.
            let mut closing = match receiver.recv() {
                Ok(Message::Settle(s)) => {
                    batch.push(s);
                    false
                }
                Ok(Message::Close) | Err(_) => true,
            };
            // Everything that queued meanwhile (during the last fsync) goes
            // into this one transaction.
            while let Ok(message) = receiver.try_recv() {
                match message {
                    Message::Settle(s) => batch.push(s),
                    Message::Close => closing = true,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if closing {
                return;
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Settlement>) {
        let now_ms = self.clock.now_ms();
        let prune = now_ms >= self.last_prune_ms.saturating_add(PRUNE_EVERY_MS);
        let cutoff_ms = prune.then(|| now_ms.saturating_sub(RETAIN_MS));
        match write_batch(&self.database, batch, cutoff_ms) {
            Ok(()) => {
                if prune {
                    self.last_prune_ms = now_ms;
                }
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .settlements
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for settlement in batch.drain(..) {
                    settlement.done.complete(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    settlements = batch.len(),
                    error = %e,
                    "budget store: commit failed; the spend stays counted in memory only"
                );
                self.counters
                    .failed_transactions
                    .fetch_add(1, Ordering::Relaxed);
                let error = BudgetError::Commit {
                    path: self.path.to_path_buf(),
                    source: Arc::new(e),
                };
                for settlement in batch.drain(..) {
                    settlement.done.complete(Err(error.clone()));
                }
            }
        }
    }
}

/// Adds every settlement of `batch` to its slot rows and, with a cutoff,
/// deletes rows that ended before it; one transaction, committed with
/// fsync.
fn write_batch(
    database: &Database,
    batch: &[Settlement],
    prune_cutoff_ms: Option<u64>,
) -> Result<(), redb::Error> {
    // One read-modify-write per row however many settlements hit it.
    let mut deltas: HashMap<Vec<u8>, (u64, Spend)> = HashMap::new();
    for settlement in batch {
        for row in &settlement.rows {
            let key = encode_key(&settlement.agent, &row.budget, row.key.start_ms);
            let delta = deltas
                .entry(key)
                .or_insert((row.key.len_ms, Spend::default()));
            delta.0 = delta.0.max(row.key.len_ms);
            delta.1 = delta.1.saturating_add(settlement.spend);
        }
    }
    let mut transaction = database.begin_write()?;
    transaction.set_durability(Durability::Immediate)?;
    {
        let mut table = transaction.open_table(SPEND)?;
        for (key, (len_ms, spend)) in deltas {
            let current = table
                .get(key.as_slice())?
                .map(|value| decode_value(value.value()));
            let (len_ms, spend) = match current {
                None => (len_ms, spend),
                Some(Some(row)) => (row.len_ms.max(len_ms), row.spend.saturating_add(spend)),
                Some(None) => {
                    tracing::warn!("budget store: replacing a slot row that does not decode");
                    (len_ms, spend)
                }
            };
            table.insert(key.as_slice(), encode_value(len_ms, spend).as_slice())?;
        }
        if let Some(cutoff_ms) = prune_cutoff_ms {
            // Rows that do not decode are left alone (and skipped at open).
            table.retain(|key, value| match (decode_key(key), decode_value(value)) {
                (Some(k), Some(v)) => k.start_ms.saturating_add(v.len_ms) > cutoff_ms,
                _ => true,
            })?;
        }
    }
    transaction.commit()?;
    Ok(())
}

pub(super) struct RowKey<'a> {
    pub agent: &'a str,
    pub budget: &'a str,
    pub start_ms: u64,
}

pub(super) struct RowValue {
    pub len_ms: u64,
    pub spend: Spend,
}

pub(super) fn encode_key(agent: &str, budget: &str, start_ms: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + agent.len() + 2 + budget.len() + 8);
    for part in [agent, budget] {
        // Agent and budget names are short (policy-checked); a longer one
        // is cut at the limit rather than written with a wrong length.
        let bytes = &part.as_bytes()[..part.len().min(usize::from(u16::MAX))];
        key.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        key.extend_from_slice(bytes);
    }
    key.extend_from_slice(&start_ms.to_be_bytes());
    key
}

pub(super) fn decode_key(key: &[u8]) -> Option<RowKey<'_>> {
    fn string(rest: &[u8]) -> Option<(&str, &[u8])> {
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let text = rest.get(..len)?;
        Some((std::str::from_utf8(text).ok()?, rest.get(len..)?))
    }
    let (agent, rest) = string(key)?;
    let (budget, rest) = string(rest)?;
    let start: [u8; 8] = rest.try_into().ok()?;
    Some(RowKey {
        agent,
        budget,
        start_ms: u64::from_be_bytes(start),
    })
}

pub(super) fn encode_value(len_ms: u64, spend: Spend) -> [u8; VALUE_LEN] {
    let mut value = [0u8; VALUE_LEN];
    value[0] = VALUE_FORMAT;
    for (i, field) in [len_ms, spend.tokens, spend.nano_usd, spend.calls]
        .into_iter()
        .enumerate()
    {
        value[1 + 8 * i..9 + 8 * i].copy_from_slice(&field.to_le_bytes());
    }
    value
}

pub(super) fn decode_value(value: &[u8]) -> Option<RowValue> {
    let (&format, fields) = value.split_first()?;
    if format != VALUE_FORMAT || fields.len() != VALUE_LEN - 1 {
        return None;
    }
    let field = |i: usize| -> Option<u64> {
        let bytes: [u8; 8] = fields.get(8 * i..8 * i + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    };
    let len_ms = field(0)?;
    // A zero-length slot would never leave the window in order.
    if len_ms == 0 {
        return None;
    }
    Some(RowValue {
        len_ms,
        spend: Spend {
            tokens: field(1)?,
            nano_usd: field(2)?,
            calls: field(3)?,
        },
    })
}

/// Where a settlement's outcome is waited for: by a task (poll) or a thread
/// (wait).
struct CommitCell {
    state: Mutex<CellState>,
    resolved: Condvar,
}

#[derive(Default)]
struct CellState {
    /// Set once; taken by the waiter.
    result: Option<Result<(), BudgetError>>,
    resolved: bool,
    waker: Option<Waker>,
}

pub(super) struct CommitWaiter {
    cell: Arc<CommitCell>,
}

/// The writer's end: resolves the waiter once, with Closed if dropped
/// unresolved (the writer stopped before writing it).
struct CommitCompleter {
    cell: Arc<CommitCell>,
    path: Arc<Path>,
    completed: bool,
}

fn commit_pair(path: Arc<Path>) -> (CommitCompleter, CommitWaiter) {
    let cell = Arc::new(CommitCell {
        state: Mutex::new(CellState::default()),
        resolved: Condvar::new(),
    });
    (
        CommitCompleter {
            cell: Arc::clone(&cell),
            path,
            completed: false,
        },
        CommitWaiter { cell },
    )
}

impl CommitCompleter {
    fn complete(mut self, result: Result<(), BudgetError>) {
        self.resolve(result);
    }

    fn resolve(&mut self, result: Result<(), BudgetError>) {
        if self.completed {
            return;
        }
        self.completed = true;
        let waker = {
            let mut state = self
                .cell
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.result = Some(result);
            state.resolved = true;
            state.waker.take()
        };
        self.cell.resolved.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for CommitCompleter {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        let error = BudgetError::Closed {
            path: PathBuf::from(&*self.path),
        };
        self.resolve(Err(error));
    }
}

impl CommitWaiter {
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BudgetError>> {
        let mut state = self
            .cell
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.resolved {
            return Poll::Ready(state.result.take().unwrap_or(Ok(())));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn wait(self) -> Result<(), BudgetError> {
        let mut state = self
            .cell
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !state.resolved {
            state = self
                .cell
                .resolved
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.result.take().unwrap_or(Ok(()))
    }
}
