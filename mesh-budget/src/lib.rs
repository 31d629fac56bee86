//! The budget ledger: spend is reserved before a call is forwarded,
//! settled to the actual usage after, never allowed past a limit, and
//! persisted in a redb file.
//!
//! # Semantics
//!
//! - **State** is kept per (agent, budget name). It survives policy reloads:
//!   a changed limit or window applies to the spend already there (a window
//!   that grows does not bring back spend that had already left the smaller
//!   window while the daemon ran). All three units are recorded for every
//!   budget, so a budget whose unit changes counts the spend already there
//!   in its new unit.
//! - **Rolling windows** (1m to 30d). Spend is kept in slots of window/60
//!   (at least 1 s), keyed by the slot's absolute start (unix ms). A slot's
//!   spend counts until `slot_end + window`: spend never leaves the window
//!   early, so no span of `window` ever holds more than the limit (it may
//!   count up to one slot longer than exactly `window`). A running total
//!   per budget keeps a reservation O(1) amortized; slots that left the
//!   window are dropped lazily, when the budget is next touched.
//! - **Counting**: `used` is the settled spend in the window, `reserved` the
//!   outstanding reservations. A reservation of `requested` fits a budget
//!   when `used + reserved + requested <= limit`, in the budget's unit
//!   (tokens, nano-USD, calls).
//! - **Atomicity**: one mutex per agent guards all its budgets, so a
//!   reservation over several budgets is all or none, and concurrent calls
//!   can never together exceed a limit. The map of agents is behind a
//!   read-write lock; once an agent and its budgets exist, reserving and
//!   settling in memory allocate nothing.
//! - **Settle** moves the reservation out of `reserved` and adds the actual
//!   spend (which may be larger than reserved: the provider decided) to the
//!   slot of the settle time. **Release** only subtracts the reservation. A
//!   [`Reservation`] settles or releases exactly once: both take it by
//!   value, and dropping it unsettled releases it.
//! - **Persistence** (a redb file, e.g. `data_dir/budgets.redb`): the
//!   settled spend per (agent, budget, slot start), with the slot's length.
//!   Reservations are never persisted: a call in flight when the daemon dies
//!   was never seen to finish, so after a restart it is not counted (the
//!   provider may still bill it; the next settled call counts from then on).
//!   [`Ledger::open`] loads rows younger than 30 days + one slot and deletes
//!   older ones; while it runs, the writer deletes them with the first
//!   commit of each hour.
//! - **Group commit**: one thread owns the database. Settlements reach it
//!   over a channel; it drains everything queued, applies all of it in ONE
//!   write transaction (read-modify-write of the slot rows), commits with
//!   fsync (`Durability::Immediate`), then completes every [`Commit`] of the
//!   batch. A failed commit completes them with the error (logged); the
//!   in-memory ledger keeps the spend. Killed at any point (even `kill -9`),
//!   each settlement is either in a committed transaction or in none, never
//!   in two.
//! - **Untrusted file**: nothing read from the file can make the daemon
//!   panic. A row that does not decode is skipped with a warning; a file
//!   that cannot be opened (not a redb file, a table of another type, held
//!   by another process) is a [`BudgetError`] naming the path.
pub mod charge;
mod clock;
mod ledger;
mod store;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ledger::{Commit, CommitStats, Ledger, Reservation};

use mesh_policy::{BudgetLimit, OnExhaust};

/// What a budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Tokens,
    /// Counted in nano-USD (1e-9 USD).
    Usd,
    Calls,
}

impl Unit {
    pub fn of(limit: &BudgetLimit) -> Unit {
        match limit {
            BudgetLimit::Tokens(_) => Unit::Tokens,
            BudgetLimit::Usd(_) => Unit::Usd,
            BudgetLimit::Calls(_) => Unit::Calls,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Tokens => "tokens",
            Unit::Usd => "usd",
            Unit::Calls => "calls",
        }
    }
}

/// What one call spends (or may spend), in every unit; usd in nano-USD
/// (1e-9) so the ledger is exact integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Spend {
    pub tokens: u64,
    pub nano_usd: u64,
    pub calls: u64,
}

impl Spend {
    pub fn in_unit(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Tokens => self.tokens,
            Unit::Usd => self.nano_usd,
            Unit::Calls => self.calls,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Spend::default()
    }

    pub(crate) fn saturating_add(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_add(other.tokens),
            nano_usd: self.nano_usd.saturating_add(other.nano_usd),
            calls: self.calls.saturating_add(other.calls),
        }
    }

    pub(crate) fn saturating_sub(self, other: Spend) -> Spend {
        Spend {
            tokens: self.tokens.saturating_sub(other.tokens),
            nano_usd: self.nano_usd.saturating_sub(other.nano_usd),
            calls: self.calls.saturating_sub(other.calls),
        }
    }
}

/// A budget's limit in its unit: usd in nano-USD (rounded down, so the
/// ledger never allows more than the policy says), tokens and calls as is.
pub fn limit_in_unit(limit: &BudgetLimit) -> u64 {
    match *limit {
        BudgetLimit::Tokens(t) => t,
        BudgetLimit::Calls(c) => c,
        // `as` saturates (and maps NaN to 0): a negative or absurd limit
        // cannot wrap around.
        BudgetLimit::Usd(usd) => (usd * 1e9).floor() as u64,
    }
}

/// A reservation a budget cannot take.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "budget {budget}: {} of {} used or reserved in the {} window; this call needs {}",
    amount(*unit, used.saturating_add(*reserved), false),
    amount(*unit, *limit, true),
    fmt_window(*window),
    amount(*unit, *requested, false)
)]
pub struct Exhausted {
    pub budget: Box<str>,
    pub unit: Unit,
    /// In `unit` (nano-USD for usd).
    pub limit: u64,
    /// Settled spend in the window.
    pub used: u64,
    /// Outstanding reservations.
    pub reserved: u64,
    /// What this call asked for.
    pub requested: u64,
    pub window: Duration,
    pub on_exhaust: OnExhaust,
    /// When enough spend leaves the window for this call to fit; None if it
    /// can never fit (requested > limit). When outstanding reservations
    /// alone keep it out, this is when the settled spend will have left (at
    /// least one second): those reservations end with their calls, at a
    /// time no one knows.
    pub retry_after: Option<Duration>,
}

/// One budget's state, for `meshctl budget show` and the
/// `mesh_budget_remaining` gauge. Amounts are in `unit` (nano-USD for usd).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetView {
    pub name: String,
    pub unit: Unit,
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    /// `limit - used - reserved`, at least 0 (spend settled above its
    /// reservation can push `used` past the limit).
    pub remaining: u64,
    pub window_secs: u64,
    pub on_exhaust: OnExhaust,
}

/// The budget store could not be opened or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    #[error("budget store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("budget store {}: commit failed (the spend is counted in memory only): {source}", path.display())]
    Commit {
        path: PathBuf,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("budget store {}: closed before this settlement was written (counted in memory only)", path.display())]
    Closed { path: PathBuf },
}

/// `950`, `1000 tokens`, `$0.95`, `$25 USD` …: `with_unit` names the unit
/// once, after the limit.
fn amount(unit: Unit, value: u64, with_unit: bool) -> String {
    match unit {
        Unit::Usd => {
            let dollars = value / 1_000_000_000;
            let nanos = value % 1_000_000_000;
            let mut text = format!("${dollars}.{nanos:09}");
            while text.ends_with('0') && text.len() > text.find('.').map_or(0, |dot| dot + 3) {
                text.pop();
            }
            text
        }
        Unit::Tokens | Unit::Calls if with_unit => format!("{value} {}", unit.as_str()),
        Unit::Tokens | Unit::Calls => value.to_string(),
    }
}

/// A window the way a policy writes it: `30d`, `24h`, `1m`, `90s`.
fn fmt_window(window: Duration) -> impl fmt::Display {
    struct Window(u64);
    impl fmt::Display for Window {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let s = self.0;
            // A day stays `24h`, as policies write daily budgets.
            if s > 86_400 && s.is_multiple_of(86_400) {
                write!(f, "{}d", s / 86_400)
            } else if s > 0 && s.is_multiple_of(3_600) {
                write!(f, "{}h", s / 3_600)
            } else if s > 0 && s.is_multiple_of(60) {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{s}s")
            }
        }
    }
    Window(window.as_secs())
}
