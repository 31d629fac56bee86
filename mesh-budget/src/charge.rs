//! Charging a call (ARCHITECTURE.md 5.3): its maximum cost is
//! reserved before it is forwarded and settled to what it really used when
//! its response ends; the settlement is durable before the agent sees that
//! end.
//!
//! The reservation of an LLM call is its input bound plus its output bound:
//! - input: the request body's length in bytes. Every token of the prompt,
//!   the tool definitions and the message framing stands for at least one
//!   byte of the JSON body, so the body's length bounds the input tokens
//!   (documented exception: media passed by URL, whose tokens the body does
//!   not show);
//! - output: the request's `max_tokens` / `max_completion_tokens` /
//!   `max_output_tokens`, else the policy's `llm[].max_output_tokens`, else
//!   [`DEFAULT_MAX_OUTPUT_TOKENS`]; when the request stated none, the bound
//!   is added to the forwarded request so the provider enforces it.
//!
//! A usd budget reserves those tokens at the model's price; a model without
//! a price cannot be called under a usd budget.
use std::time::Duration;

use mesh_l7::{
    llm::{self, LlmApi, Usage},
    Call, Protocol,
};
use mesh_policy::{BudgetLimit, BudgetScope, OnExhaust, Price};

use crate::{Exhausted, Ledger, Reservation, Spend};

/// Output tokens reserved for a budgeted LLM request that states no bound
/// and whose `llm` entry sets no `max_output_tokens` (the bound is then
/// added to the forwarded request).
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// What a forwarded call was charged.
pub enum Charge {
    /// An MCP tools/call or A2A message: one call.
    Call(Reservation),
    /// An LLM call: settled from its usage.
    Llm(Box<LlmCharge>),
}

pub struct LlmCharge {
    pub reservation: Reservation,
    pub api: LlmApi,
    pub price: Option<Price>,
    /// The input tokens reserved (the body's length).
    pub input_bound: u64,
    /// The output tokens reserved: a stream is ended before it passes them.
    pub output_bound: u64,
    /// The mesh asked a streamed chat completion for its usage: the chunk
    /// carrying it is not the client's to see.
    pub usage_injected: bool,
}

impl Charge {
    pub fn reserved(&self) -> Spend {
        match self {
            Charge::Call(r) => r.reserved(),
            Charge::Llm(l) => l.reservation.reserved(),
        }
    }
}

/// Why a call's budgets cannot take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The budget is used up: the call may fit once the window frees
    /// enough (HTTP 429).
    Exhausted,
    /// The call cannot be costed (a model without a price under a usd
    /// budget, a call whose usage the mesh cannot read): retrying cannot
    /// help (HTTP 403).
    Unpriced,
}

/// A call its budgets cannot take.
#[derive(Debug)]
pub struct BudgetRefusal {
    pub kind: RefusalKind,
    /// `budgets[NAME]`.
    pub rule: String,
    pub reason: String,
    pub on_exhaust: OnExhaust,
    /// When the window will have freed enough for the call to fit.
    pub retry_after: Option<Duration>,
}

impl BudgetRefusal {
    fn exhausted(e: &Exhausted) -> BudgetRefusal {
        let when = match e.retry_after {
            Some(d) => format!("; it fits again in {}s", d.as_secs().max(1)),
            None => "; it can never fit this budget".to_owned(),
        };
        BudgetRefusal {
            kind: RefusalKind::Exhausted,
            rule: format!("budgets[{}]", e.budget),
            reason: format!("{e}{when} (on_exhaust: {})", e.on_exhaust.as_str()),
            on_exhaust: e.on_exhaust,
            retry_after: e.retry_after,
        }
    }
}

/// A reserved call: its charge and, for an LLM request that stated no
/// output bound, the request body to forward instead (with the bound).
pub struct Reserved {
    pub charge: Charge,
    pub rewritten_body: Option<Vec<u8>>,
}

/// Reserves `call`'s maximum cost against `scope`. `body` is the request
/// body (for the output bound added to an LLM request that has none).
pub fn reserve(
    ledger: &Ledger,
    agent: &str,
    scope: &BudgetScope<'_>,
    call: &Call,
    body: &[u8],
) -> Result<Reserved, BudgetRefusal> {
    match (&call.protocol, &call.llm) {
        (Protocol::Llm, Some(request)) => {
            if request.background && scope.counts_tokens_or_usd() {
                return Err(unaccountable(
                    scope,
                    "a background response (`background: true`) reports its usage \
                     only to whoever polls for it later, so it cannot be counted",
                ));
            }
            let output_bound = request
                .max_output_tokens
                .or(scope.max_output_tokens)
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
            let input_bound = request.input_bytes;
            let price = scope.price(&request.model);
            if scope.counts_usd() && price.is_none() {
                let name = scope
                    .budgets
                    .iter()
                    .find(|b| matches!(b.limit, BudgetLimit::Usd(_)))
                    .map_or("", |b| &*b.name);
                return Err(BudgetRefusal {
                    kind: RefusalKind::Unpriced,
                    rule: format!("budgets[{name}]"),
                    reason: format!(
                        "model {:?} has no entry in prices, and usd budget {name} needs its price",
                        request.model
                    ),
                    on_exhaust: OnExhaust::Halt,
                    retry_after: None,
                });
            }
            let spend = Spend {
                tokens: input_bound.saturating_add(output_bound),
                nano_usd: price.map_or(0, |p| nano_usd(&p, input_bound, 0, output_bound)),
                calls: 0,
            };
            let reservation = ledger
                .reserve(agent, &scope.budgets, spend)
                .map_err(|e| BudgetRefusal::exhausted(&e))?;
            let usage_injected =
                request.api == LlmApi::ChatCompletions && request.stream && !request.include_usage;
            let rewrite = llm::BudgetRewrite {
                max_tokens: request.max_output_tokens.is_none().then_some(output_bound),
                include_usage: usage_injected,
            };
            let rewritten_body = llm::rewrite_for_budget(request.api, body, rewrite);
            // Not rewritten (cannot be, in practice: it parsed as an object):
            // the client's own stream options stand.
            let usage_injected = usage_injected && rewritten_body.is_some();
            Ok(Reserved {
                charge: Charge::Llm(Box::new(LlmCharge {
                    reservation,
                    api: request.api,
                    price,
                    input_bound,
                    output_bound,
                    usage_injected,
                })),
                rewritten_body,
            })
        }
        (Protocol::Http, _) => Err(unaccountable(
            scope,
            &format!(
                "{} {} at an llm endpoint is not an API the mesh reads usage of \
                 (chat completions, responses, messages)",
                call.method,
                call.name.as_deref().unwrap_or("")
            ),
        )),
        _ => {
            let spend = Spend {
                calls: 1,
                ..Spend::default()
            };
            let reservation = ledger
                .reserve(agent, &scope.budgets, spend)
                .map_err(|e| BudgetRefusal::exhausted(&e))?;
            Ok(Reserved {
                charge: Charge::Call(reservation),
                rewritten_body: None,
            })
        }
    }
}

/// The refusal of an LLM call whose usage cannot be counted against the
/// scope's token or usd budget.
pub fn unaccountable(scope: &BudgetScope<'_>, why: &str) -> BudgetRefusal {
    let name = scope
        .budgets
        .iter()
        .find(|b| matches!(b.limit, BudgetLimit::Usd(_) | BudgetLimit::Tokens(_)))
        .map_or("", |b| &*b.name);
    BudgetRefusal {
        kind: RefusalKind::Unpriced,
        rule: format!("budgets[{name}]"),
        reason: format!("{why}; budget {name} counts what calls use"),
        on_exhaust: OnExhaust::Halt,
        retry_after: None,
    }
}

/// What an LLM call used, in every unit, from the provider's usage. An
/// estimate without the input count (a cut stream) counts the reserved input
/// bound: the provider will bill the prompt whole.
pub fn llm_spend(charge: &LlmCharge, usage: &Usage) -> Spend {
    let (input, cached, cache_write, output) = match charge.api {
        // OpenAI's prompt tokens include the cached ones.
        LlmApi::ChatCompletions | LlmApi::Responses => (
            usage.input_tokens.saturating_sub(usage.cached_input_tokens),
            usage.cached_input_tokens,
            0,
            usage.output_tokens,
        ),
        // Anthropic's input excludes cache reads and writes.
        LlmApi::Messages => (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_creation_input_tokens,
            usage.output_tokens,
        ),
    };
    let input = if usage.estimated && input == 0 && cached == 0 {
        charge.input_bound
    } else {
        input.saturating_add(cache_write)
    };
    Spend {
        tokens: input.saturating_add(cached).saturating_add(output),
        nano_usd: charge
            .price
            .map_or(0, |p| nano_usd(&p, input, cached, output)),
        calls: 0,
    }
}

/// USD per 1M tokens is nano-USD (1e-9) per 1e-3 token: cost in nano-USD,
/// rounded up.
pub fn nano_usd(price: &Price, input: u64, cached: u64, output: u64) -> u64 {
    let cached_price = price.cached_input.unwrap_or(price.input);
    let nano =
        (input as f64 * price.input + cached as f64 * cached_price + output as f64 * price.output)
            * 1_000.0;
    if nano.is_finite() && nano > 0.0 {
        nano.ceil().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> Price {
        Price {
            input: 0.15,
            output: 0.60,
            cached_input: Some(0.075),
        }
    }

    #[test]
    fn costs_are_nano_usd_rounded_up() {
        // 1M input tokens at $0.15 = 0.15 USD = 150_000_000 nano-USD.
        assert_eq!(nano_usd(&price(), 1_000_000, 0, 0), 150_000_000);
        assert_eq!(nano_usd(&price(), 0, 0, 1), 600);
        assert_eq!(nano_usd(&price(), 0, 2, 0), 150);
        assert_eq!(nano_usd(&price(), 0, 0, 0), 0);
        // A third of a nano-USD rounds up to one.
        let tiny = Price {
            input: 0.000_333,
            output: 0.0,
            cached_input: None,
        };
        assert_eq!(nano_usd(&tiny, 1, 0, 0), 1);
    }
}
