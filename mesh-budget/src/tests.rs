//! Unit tests of the ledger: limits, atomicity, concurrency, windows,
//! persistence and the group commit.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::store::{encode_key, encode_value};
use super::*;
use mesh_policy::{Budget, BudgetLimit, OnExhaust};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);
/// A start time with round slots: 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

fn budget(name: &str, limit: BudgetLimit, window: Duration) -> Budget {
    Budget {
        name: name.into(),
        limit,
        window,
        on_exhaust: OnExhaust::Halt,
        server: None,
        tool: None,
    }
}

fn tokens(n: u64) -> Spend {
    Spend {
        tokens: n,
        ..Spend::default()
    }
}

/// Reserves `reserve`, settles at `actual` and waits until it is durable.
fn spend_now(ledger: &Ledger, agent: &str, budgets: &[&Budget], reserve: Spend, actual: Spend) {
    ledger
        .reserve(agent, budgets, reserve)
        .unwrap()
        .settle(actual)
        .wait()
        .unwrap();
}

fn clock_at(ms: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(ms))
}

fn memory_ledger(clock: &Arc<ManualClock>) -> Ledger {
    Ledger::in_memory(Arc::clone(clock) as Arc<dyn Clock>)
}

/// A file path in the temp directory, removed (with redb's lock file, if
/// any) when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mesh-budget-test-{}-{test}-{n}.redb",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open_ledger(file: &TempFile, clock: &Arc<ManualClock>) -> Ledger {
    Ledger::open(file.path(), Arc::clone(clock) as Arc<dyn Clock>).expect("open the test ledger")
}

#[test]
fn reserves_up_to_the_limit_then_refuses_with_the_numbers() {
    let clock = clock_at(T0);
    let ledger = memory_ledger(&clock);
    let daily = budget("daily-tokens", BudgetLimit::Tokens(1000), MINUTE);
    let first = ledger.reserve("bot", &[&daily], tokens(400)).unwrap();
    let second = ledger.reserve("bot", &[&daily], tokens(550)).unwrap();
    assert_eq!(first.reserved(), tokens(400));

    let refused = ledger
        .reserve("bot", &[&daily], tokens(120))
        .expect_err("950 + 120 > 1000");
    assert_eq!(&*refused.budget, "daily-tokens");
    assert_eq!(refused.unit, Unit::Tokens);
    assert_eq!(
        (
            refused.limit,
            refused.used,
            refused.reserved,
            refused.requested
        ),
        (1000, 0, 950, 120)
    );
    assert_eq!(refused.window, MINUTE);
    assert_eq!(refused.on_exhaust, OnExhaust::Halt);
    // Only reservations are in the way: no settled spend will leave.
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(
        refused.to_string(),
        "budget daily-tokens: 950 of 1000 tokens used or reserved in the 1m window; this call needs 120"
    );

    // Exactly at the limit fits.
    let last = ledger.reserve("bot", &[&daily], tokens(50)).unwrap();
    let view = ledger.view("bot", &daily);
    assert_eq!((view.used, view.reserved, view.remaining), (0, 1000, 0));
    drop((first, second, last));
}

#[test]
fn a_call_larger_than_the_limit_can_never_fit() {
    let ledger = memory_ledger(&clock_at(T0));
    let small = budget("small", BudgetLimit::Calls(2), MINUTE);
    let refused = ledger
        .reserve(
            "bot",
            &[&small],
            Spend {
                calls: 3,
                ..Spend::default()
            },
        )
        .expect_err("3 calls > 2");
    assert_eq!(refused.retry_after, None);
    assert_eq!(refused.unit, Unit::Calls);
}

#[test]
fn release_and_drop_free_the_reservation() {
    let ledger = memory_ledger(&clock_at(T0));
    let b = budget("b", BudgetLimit::Tokens(100), MINUTE);
    let held = ledger.reserve("bot", &[&b], tokens(100)).unwrap();
    assert!(ledger.reserve("bot", &[&b], tokens(1)).is_err());
    held.release();
    let view = ledger.view("bot", &b);
    assert_eq!((view.used, view.reserved, view.remaining), (0, 0, 100));

    let dropped = ledger.reserve("bot", &[&b], tokens(100)).unwrap();
    drop(dropped);
    assert_eq!(ledger.view("bot", &b).reserved, 0);
    assert!(ledger.reserve("bot", &[&b], tokens(100)).is_ok());
}

#[test]
fn settle_replaces_the_reservation_by_the_actual_spend() {
    let ledger = memory_ledger(&clock_at(T0));
    let b = budget("b", BudgetLimit::Tokens(1000), MINUTE);

    // Below the reservation: the difference is free again.
    let r = ledger.reserve("bot", &[&b], tokens(500)).unwrap();
    r.settle(tokens(200)).wait().unwrap();
    let view = ledger.view("bot", &b);
    assert_eq!((view.used, view.reserved, view.remaining), (200, 0, 800));

    // Above it: counted whole, even past the limit.
    let r = ledger.reserve("bot", &[&b], tokens(100)).unwrap();
    r.settle(tokens(900)).wait().unwrap();
    let view = ledger.view("bot", &b);
    assert_eq!((view.used, view.reserved, view.remaining), (1100, 0, 0));
    let refused = ledger.reserve("bot", &[&b], tokens(1)).unwrap_err();
    assert_eq!((refused.used, refused.reserved), (1100, 0));
}

#[test]
fn a_reservation_over_several_budgets_is_all_or_none() {
    let ledger = memory_ledger(&clock_at(T0));
    let daily_tokens = budget("tokens", BudgetLimit::Tokens(10_000), DAY);
    let spend_usd = budget("spend", BudgetLimit::Usd(1.0), DAY);
    let runaway = budget("runaway", BudgetLimit::Calls(5), MINUTE);
    let all = [&daily_tokens, &spend_usd, &runaway];
    let call = Spend {
        tokens: 1_000,
        nano_usd: 400_000_000,
        calls: 1,
    };

    let first = ledger.reserve("bot", &all, call).unwrap();
    let second = ledger.reserve("bot", &all, call).unwrap();
    // A third would pass tokens and calls but not usd ($1.20 > $1).
    let refused = ledger.reserve("bot", &all, call).unwrap_err();
    assert_eq!(&*refused.budget, "spend");
    assert_eq!(refused.unit, Unit::Usd);
    assert_eq!(
        (refused.limit, refused.reserved, refused.requested),
        (1_000_000_000, 800_000_000, 400_000_000)
    );
    assert_eq!(
        refused.to_string(),
        "budget spend: $0.80 of $1.00 used or reserved in the 24h window; this call needs $0.40"
    );
    // Nothing of the refused call stayed reserved anywhere.
    assert_eq!(ledger.view("bot", &daily_tokens).reserved, 2_000);
    assert_eq!(ledger.view("bot", &spend_usd).reserved, 800_000_000);
    assert_eq!(ledger.view("bot", &runaway).reserved, 2);

    // Each budget is charged in its own unit.
    first.settle(call).wait().unwrap();
    let view = ledger.view("bot", &spend_usd);
    assert_eq!(
        (view.unit, view.used, view.reserved),
        (Unit::Usd, 400_000_000, 400_000_000)
    );
    assert_eq!(ledger.view("bot", &runaway).used, 1);
    assert_eq!(ledger.view("bot", &daily_tokens).used, 1_000);
    second.release();
    assert_eq!(ledger.view("bot", &spend_usd).remaining, 600_000_000);
}

#[test]
fn a_budget_named_twice_is_charged_once() {
    let ledger = memory_ledger(&clock_at(T0));
    let b = budget("b", BudgetLimit::Tokens(100), MINUTE);
    let r = ledger.reserve("bot", &[&b, &b], tokens(60)).unwrap();
    assert_eq!(ledger.view("bot", &b).reserved, 60);
    r.settle(tokens(60)).wait().unwrap();
    assert_eq!(ledger.view("bot", &b).used, 60);
}

#[test]
fn agents_have_their_own_budgets() {
    let ledger = memory_ledger(&clock_at(T0));
    let b = budget("b", BudgetLimit::Tokens(100), MINUTE);
    let _a = ledger.reserve("alpha", &[&b], tokens(100)).unwrap();
    assert!(ledger.reserve("beta", &[&b], tokens(100)).is_ok());
    assert!(ledger.reserve("alpha", &[&b], tokens(1)).is_err());
    let never = ledger.view("gamma", &b);
    assert_eq!((never.used, never.reserved, never.remaining), (0, 0, 100));
}

#[test]
fn concurrent_calls_never_exceed_the_limit() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 1000;
    const LIMIT: u64 = 20_000;
    let ledger = Arc::new(memory_ledger(&clock_at(T0)));
    let tokens_budget = Arc::new(budget("tokens", BudgetLimit::Tokens(LIMIT), DAY));
    let calls_budget = Arc::new(budget("calls", BudgetLimit::Calls(THREADS * CALLS), DAY));
    let settled_tokens = Arc::new(AtomicU64::new(0));
    let settled_calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            let tokens_budget = Arc::clone(&tokens_budget);
            let calls_budget = Arc::clone(&calls_budget);
            let settled_tokens = Arc::clone(&settled_tokens);
            let settled_calls = Arc::clone(&settled_calls);
            thread::spawn(move || {
                for i in 0..CALLS {
                    let want = Spend {
                        tokens: 5 + (t + i) % 7,
                        nano_usd: 0,
                        calls: 1,
                    };
                    let Ok(reservation) =
                        ledger.reserve("bot", &[&tokens_budget, &calls_budget], want)
                    else {
                        continue;
                    };
                    // Some calls use less than reserved, one in ten fail.
                    if i % 10 == 9 {
                        reservation.release();
                        continue;
                    }
                    let actual = Spend {
                        tokens: want.tokens - i % 3,
                        ..want
                    };
                    reservation.settle(actual).wait().unwrap();
                    settled_tokens.fetch_add(actual.tokens, Ordering::Relaxed);
                    settled_calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let view = ledger.view("bot", &tokens_budget);
    assert_eq!(view.reserved, 0);
    assert_eq!(view.used, settled_tokens.load(Ordering::Relaxed));
    assert!(view.used <= LIMIT, "settled {} > {LIMIT}", view.used);
    // The limit was reached: most calls were refused, and it came close.
    assert!(view.used > LIMIT - 20, "settled only {}", view.used);
    let calls = ledger.view("bot", &calls_budget);
    assert_eq!(
        (calls.used, calls.reserved),
        (settled_calls.load(Ordering::Relaxed), 0)
    );
}

#[test]
fn spend_leaves_the_window_at_its_slot_end_plus_the_window() {
    // A 1m window has 1 s slots: spend at T0 + 10.5 s is in the slot
    // [T0 + 10 s, T0 + 11 s) and counts until T0 + 71 s.
    let clock = clock_at(T0 + 10_500);
    let ledger = memory_ledger(&clock);
    let b = budget("b", BudgetLimit::Tokens(1000), MINUTE);
    spend_now(&ledger, "bot", &[&b], tokens(1000), tokens(1000));

    clock.set(T0 + 70_999);
    let refused = ledger.reserve("bot", &[&b], tokens(1)).unwrap_err();
    assert_eq!(refused.used, 1000);
    assert_eq!(refused.retry_after, Some(Duration::from_millis(1)));
    clock.set(T0 + 71_000);
    let fits = ledger.reserve("bot", &[&b], tokens(1000)).unwrap();
    assert_eq!(ledger.view("bot", &b).used, 0);
    fits.release();
}

#[test]
fn retry_after_is_when_enough_spend_has_left() {
    // A 1h window has 60 s slots.
    let clock = clock_at(T0);
    let ledger = memory_ledger(&clock);
    let b = budget("b", BudgetLimit::Calls(10), Duration::from_secs(3600));
    let one_call = Spend {
        calls: 1,
        ..Spend::default()
    };
    // 3 calls in the first slot, 7 in the slot starting at T0 + 5 min.
    for at in [T0, T0 + 1, T0 + 59_999] {
        clock.set(at);
        spend_now(&ledger, "bot", &[&b], one_call, one_call);
    }
    clock.set(T0 + 300_000);
    for _ in 0..7 {
        spend_now(&ledger, "bot", &[&b], one_call, one_call);
    }
    clock.set(T0 + 600_000);
    // 2 calls need the first slot gone: at T0 + 60 s + 1 h.
    let refused = ledger
        .reserve(
            "bot",
            &[&b],
            Spend {
                calls: 2,
                ..Spend::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        refused.retry_after,
        Some(Duration::from_millis(60_000 + 3_600_000 - 600_000))
    );
    // 4 calls need the second slot gone too: at T0 + 6 min + 1 h.
    let refused = ledger
        .reserve(
            "bot",
            &[&b],
            Spend {
                calls: 4,
                ..Spend::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        refused.retry_after,
        Some(Duration::from_millis(360_000 + 3_600_000 - 600_000))
    );
    assert_eq!(ledger.slot_count("bot", "b"), 2);
    clock.set(T0 + 60_000 + 3_600_000);
    let view = ledger.view("bot", &b);
    assert_eq!(view.used, 7);
    assert_eq!(ledger.slot_count("bot", "b"), 1);
}

#[test]
fn slots_stay_bounded_by_the_window() {
    let clock = clock_at(T0);
    let ledger = memory_ledger(&clock);
    let b = budget("b", BudgetLimit::Tokens(u64::MAX), MINUTE);
    for _ in 0..1000 {
        spend_now(&ledger, "bot", &[&b], tokens(1), tokens(1));
        clock.advance(Duration::from_millis(700));
    }
    // 60 s of 1 s slots, plus the current one.
    assert!(ledger.slot_count("bot", "b") <= 61);
    assert!(ledger.view("bot", &b).used <= 61 * 2);
}

#[test]
fn a_changed_limit_or_window_applies_to_the_spend_already_there() {
    let clock = clock_at(T0);
    let ledger = memory_ledger(&clock);
    let day = budget("b", BudgetLimit::Tokens(1000), DAY);
    spend_now(&ledger, "bot", &[&day], tokens(600), tokens(600));

    let lower = budget("b", BudgetLimit::Tokens(500), DAY);
    let refused = ledger.reserve("bot", &[&lower], tokens(1)).unwrap_err();
    assert_eq!((refused.used, refused.limit), (600, 500));

    // Down to 1m: the spend (in a 24 min slot) leaves 1 min after the slot.
    clock.set(T0 + 24 * 60_000 + 60_000);
    let minute = budget("b", BudgetLimit::Tokens(500), MINUTE);
    assert_eq!(ledger.view("bot", &minute).used, 0);

    // Another unit under the same name counts the spend in that unit.
    let r = ledger
        .reserve(
            "bot",
            &[&minute],
            Spend {
                tokens: 5,
                nano_usd: 7,
                calls: 1,
            },
        )
        .unwrap();
    r.settle(Spend {
        tokens: 5,
        nano_usd: 7,
        calls: 1,
    })
    .wait()
    .unwrap();
    let as_calls = budget("b", BudgetLimit::Calls(3), MINUTE);
    assert_eq!(ledger.view("bot", &as_calls).used, 1);
}

#[test]
fn units_and_limits() {
    assert_eq!(Unit::of(&BudgetLimit::Usd(2.5)), Unit::Usd);
    assert_eq!(Unit::Tokens.as_str(), "tokens");
    assert_eq!(limit_in_unit(&BudgetLimit::Usd(25.0)), 25_000_000_000);
    assert_eq!(limit_in_unit(&BudgetLimit::Usd(0.1)), 100_000_000);
    // Rounded down: never more than the policy allows.
    assert_eq!(
        limit_in_unit(&BudgetLimit::Usd(1.000_000_000_9)),
        1_000_000_000
    );
    assert_eq!(limit_in_unit(&BudgetLimit::Usd(-1.0)), 0);
    assert_eq!(limit_in_unit(&BudgetLimit::Calls(120)), 120);
    let json = serde_json::to_value(Unit::Usd).unwrap();
    assert_eq!(json, "usd");
}

#[test]
fn settled_spend_survives_a_reopen() {
    let file = TempFile::new("reopen");
    let clock = clock_at(T0);
    let b = budget("b", BudgetLimit::Tokens(1000), DAY);
    let calls = budget("c", BudgetLimit::Calls(10), MINUTE);
    {
        let ledger = open_ledger(&file, &clock);
        for n in [100, 250] {
            let spend = Spend {
                tokens: n,
                nano_usd: 0,
                calls: 1,
            };
            spend_now(&ledger, "bot", &[&b, &calls], spend, spend);
            clock.advance(Duration::from_secs(30));
        }
        // A reservation in flight is never persisted.
        let _in_flight = ledger.reserve("bot", &[&b], tokens(500)).unwrap();
        spend_now(&ledger, "other", &[&b], tokens(7), tokens(7));
    }
    let ledger = open_ledger(&file, &clock);
    let view = ledger.view("bot", &b);
    assert_eq!((view.used, view.reserved), (350, 0));
    assert_eq!(ledger.view("other", &b).used, 7);
    assert_eq!(ledger.view("bot", &calls).used, 2);
    // More spend adds to the same rows and stays after another reopen.
    spend_now(&ledger, "bot", &[&b], tokens(1), tokens(1));
    drop(ledger);

    // Two minutes on, the 1m window's spend has left; the day's has not.
    clock.advance(Duration::from_secs(120));
    let ledger = open_ledger(&file, &clock);
    assert_eq!(ledger.view("bot", &b).used, 351);
    assert_eq!(ledger.view("bot", &calls).used, 0);
    drop(ledger);

    // Past 30 days the rows are deleted at open: going back in time finds
    // nothing.
    clock.advance(Duration::from_secs(31 * 86_400));
    drop(open_ledger(&file, &clock));
    clock.set(T0 + 1);
    let ledger = open_ledger(&file, &clock);
    assert_eq!(ledger.view("bot", &b).used, 0);
}

#[tokio::test]
async fn commits_are_futures() {
    let file = TempFile::new("future");
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    let b = budget("b", BudgetLimit::Tokens(1000), MINUTE);
    let commit = ledger
        .reserve("bot", &[&b], tokens(10))
        .unwrap()
        .settle(tokens(10));
    commit.await.unwrap();
    // A zero settlement has nothing to write.
    ledger
        .reserve("bot", &[&b], tokens(10))
        .unwrap()
        .settle(Spend::default())
        .await
        .unwrap();
    Commit::ready().await.unwrap();
    assert_eq!(ledger.commit_stats().settlements, 1);
}

#[test]
fn rows_that_do_not_decode_are_skipped() {
    let file = TempFile::new("corrupt");
    {
        let database = redb::Database::create(file.path()).unwrap();
        let transaction = database.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("spend");
            let mut table = transaction.open_table(table).unwrap();
            let good_key = encode_key("bot", "b", T0);
            let good = encode_value(1_000, tokens(42));
            table.insert(good_key.as_slice(), good.as_slice()).unwrap();
            // A short key, a key with a wrong length prefix, bad UTF-8.
            table.insert(&b"\x00"[..], good.as_slice()).unwrap();
            table.insert(&b"\x00\x09bot"[..], good.as_slice()).unwrap();
            let mut bad_utf8 = encode_key("bot", "b", T0 + 1);
            bad_utf8[2] = 0xff;
            table.insert(bad_utf8.as_slice(), good.as_slice()).unwrap();
            // Short value, unknown format, zero slot length.
            let key = encode_key("bot", "c", T0);
            table.insert(key.as_slice(), &good[..5]).unwrap();
            let mut future_format = good;
            future_format[0] = 9;
            table
                .insert(
                    encode_key("bot", "d", T0).as_slice(),
                    future_format.as_slice(),
                )
                .unwrap();
            table
                .insert(
                    encode_key("bot", "e", T0).as_slice(),
                    encode_value(0, tokens(5)).as_slice(),
                )
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    let clock = clock_at(T0 + 5_000);
    let ledger = open_ledger(&file, &clock);
    let b = budget("b", BudgetLimit::Tokens(100), MINUTE);
    assert_eq!(ledger.view("bot", &b).used, 42);
    for name in ["c", "d", "e"] {
        assert_eq!(
            ledger
                .view("bot", &budget(name, BudgetLimit::Tokens(9), MINUTE))
                .used,
            0
        );
    }
    // A settlement onto the undecodable row of "c" replaces it.
    let c = budget("c", BudgetLimit::Tokens(100), MINUTE);
    clock.set(T0);
    spend_now(&ledger, "bot", &[&c], tokens(3), tokens(3));
    drop(ledger);
    let ledger = open_ledger(&file, &clock);
    assert_eq!(ledger.view("bot", &c).used, 3);
}

#[test]
fn a_file_that_is_not_a_ledger_is_an_error_naming_it() {
    let garbage = TempFile::new("garbage");
    std::fs::write(garbage.path(), vec![0x5a; 64 * 1024]).unwrap();
    let error = Ledger::open(garbage.path(), Arc::new(SystemClock))
        .err()
        .expect("garbage is not a redb file");
    assert!(matches!(error, BudgetError::Open { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&*garbage.path().to_string_lossy()),
        "{error}"
    );

    // A redb file whose `spend` table has other types.
    let other = TempFile::new("other-types");
    {
        let database = redb::Database::create(other.path()).unwrap();
        let transaction = database.begin_write().unwrap();
        {
            let table: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("spend");
            transaction.open_table(table).unwrap().insert(1, 2).unwrap();
        }
        transaction.commit().unwrap();
    }
    let error = Ledger::open(other.path(), Arc::new(SystemClock))
        .err()
        .expect("a table of other types");
    assert!(
        error.to_string().contains(&*other.path().to_string_lossy()),
        "{error}"
    );

    // A directory that does not exist.
    let missing = std::env::temp_dir()
        .join("mesh-no-such-dir")
        .join("budgets.redb");
    let error = Ledger::open(&missing, Arc::new(SystemClock))
        .err()
        .expect("no directory");
    assert!(error.to_string().contains("mesh-no-such-dir"), "{error}");
}

#[test]
fn queued_settlements_share_one_transaction() {
    const SETTLES: u64 = 200;
    let file = TempFile::new("group");
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    let b = budget("b", BudgetLimit::Tokens(u64::MAX), DAY);
    // Queued back to back, faster than one fsync: they cannot each get
    // their own transaction.
    let commits: Vec<Commit> = (0..SETTLES)
        .map(|_| {
            ledger
                .reserve("bot", &[&b], tokens(1))
                .unwrap()
                .settle(tokens(1))
        })
        .collect();
    for commit in commits {
        commit.wait().unwrap();
    }
    let stats = ledger.commit_stats();
    assert_eq!(stats.settlements, SETTLES);
    assert_eq!(stats.failed_transactions, 0);
    assert!(stats.transactions < SETTLES, "{stats:?}");
    drop(ledger);
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    assert_eq!(ledger.view("bot", &b).used, SETTLES);
}

#[test]
fn concurrent_settlers_all_get_their_commit() {
    const THREADS: u64 = 16;
    const SETTLES: u64 = 40;
    let file = TempFile::new("settlers");
    let ledger = Arc::new(Ledger::open(file.path(), Arc::new(SystemClock)).unwrap());
    let b = Arc::new(budget("b", BudgetLimit::Tokens(u64::MAX), DAY));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            let b = Arc::clone(&b);
            thread::spawn(move || {
                let agent = format!("agent-{}", t % 4);
                for _ in 0..SETTLES {
                    let r = ledger.reserve(&agent, &[&b], tokens(2)).unwrap();
                    r.settle(tokens(2)).wait().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let stats = ledger.commit_stats();
    assert_eq!(stats.settlements, THREADS * SETTLES);
    assert!(stats.transactions <= stats.settlements);
    ledger.close();
    drop(ledger);
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    for a in 0..4 {
        assert_eq!(
            ledger.view(&format!("agent-{a}"), &b).used,
            THREADS / 4 * SETTLES * 2
        );
    }
}

#[test]
fn close_flushes_then_refuses_to_persist() {
    let file = TempFile::new("close");
    let clock = clock_at(T0);
    let ledger = open_ledger(&file, &clock);
    let b = budget("b", BudgetLimit::Tokens(1000), DAY);
    let before = ledger
        .reserve("bot", &[&b], tokens(5))
        .unwrap()
        .settle(tokens(5));
    ledger.close();
    ledger.close();
    before.wait().unwrap();
    let after = ledger
        .reserve("bot", &[&b], tokens(6))
        .unwrap()
        .settle(tokens(6));
    let error = after.wait().unwrap_err();
    assert!(matches!(error, BudgetError::Closed { .. }), "{error:?}");
    // Counted in memory all the same.
    assert_eq!(ledger.view("bot", &b).used, 11);
    drop(ledger);
    let ledger = open_ledger(&file, &clock);
    assert_eq!(ledger.view("bot", &b).used, 5);
}

#[test]
fn a_second_open_of_the_same_file_is_an_error() {
    let file = TempFile::new("twice");
    let clock = clock_at(T0);
    let _first = open_ledger(&file, &clock);
    let error = Ledger::open(file.path(), Arc::clone(&clock) as Arc<dyn Clock>)
        .err()
        .expect("the file is held");
    assert!(matches!(error, BudgetError::Open { .. }), "{error:?}");
}

#[test]
fn the_writer_deletes_rows_past_30_days_while_it_runs() {
    let file = TempFile::new("prune");
    let clock = clock_at(T0);
    let b = budget("b", BudgetLimit::Tokens(u64::MAX), DAY);
    {
        let ledger = open_ledger(&file, &clock);
        spend_now(&ledger, "bot", &[&b], tokens(4), tokens(4));
        // 31 days on, the next commit also prunes.
        clock.advance(Duration::from_secs(31 * 86_400));
        spend_now(&ledger, "bot", &[&b], tokens(6), tokens(6));
    }
    // Reopened back at the start (so open deletes nothing), only the
    // second row is left.
    clock.set(T0);
    let ledger = open_ledger(&file, &clock);
    assert_eq!(ledger.view("bot", &b).used, 6);
}

#[test]
fn reservations_and_commits_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    fn unpin_future<T: std::future::Future + Unpin + Send>() {}
    send::<Reservation>();
    sync::<Ledger>();
    unpin_future::<Commit>();

    let file = TempFile::new("threads");
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    let b = budget("b", BudgetLimit::Tokens(100), MINUTE);
    let reservation = ledger.reserve("bot", &[&b], tokens(30)).unwrap();
    let commit = thread::spawn(move || reservation.settle(tokens(20)))
        .join()
        .unwrap();
    thread::spawn(move || commit.wait())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(ledger.view("bot", &b).used, 20);
}

/// The child side of [`a_killed_writer_loses_nothing_it_acknowledged`]:
/// settles one token at a time, printing each count once durable. Does
/// nothing unless started by that test.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os("MESH_BUDGET_CRASH_CHILD") else {
        return;
    };
    use std::io::Write as _;
    let ledger = Ledger::open(Path::new(&path), Arc::new(SystemClock)).unwrap();
    let b = budget("b", BudgetLimit::Tokens(u64::MAX), DAY);
    let mut stdout = std::io::stdout();
    for n in 1u64.. {
        spend_now(&ledger, "bot", &[&b], tokens(1), tokens(1));
        writeln!(stdout, "durable {n}").unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn a_killed_writer_loses_nothing_it_acknowledged() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let file = TempFile::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "tests::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESH_BUDGET_CRASH_CHILD", file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = 0u64;
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("durable ") {
            acknowledged = n.parse().unwrap();
            if acknowledged >= 50 {
                break;
            }
        }
    }
    assert!(acknowledged >= 50, "the child stopped early");
    // SIGKILL, mid-loop: the writer may be inside a transaction.
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("durable ") {
            acknowledged = n.parse().unwrap();
        }
    }
    let ledger = Ledger::open(file.path(), Arc::new(SystemClock)).unwrap();
    let used = ledger
        .view("bot", &budget("b", BudgetLimit::Tokens(u64::MAX), DAY))
        .used;
    // Everything acknowledged is there; at most the one settlement after it
    // (committed, not yet printed) too; none twice.
    assert!(
        used == acknowledged || used == acknowledged + 1,
        "used {used}, acknowledged {acknowledged}"
    );
}
