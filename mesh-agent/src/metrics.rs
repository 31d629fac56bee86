//! Prometheus metrics (`/metrics`), liveness (`/healthz`) and readiness
//! (`/readyz`). Kernel counters are read from the BPF maps at scrape time.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        counter::ConstCounter,
        counter::Counter,
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, sync::watch};

mod labels;

use crate::{
    budget::Ledger,
    l7::{llm::Usage, Protocol},
    policy::PolicyStore,
    records::Verdict,
    state::{Counters, Governor},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub agent: String,
    pub protocol: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCallLabels {
    pub agent: String,
    pub server: String,
    pub tool: String,
    pub decision: String,
    /// The rule that decided (short and stable, ARCHITECTURE.md 5.1).
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub agent: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub agent: String,
    pub provider: String,
    pub model: String,
    /// `input`, `output` or `cached_input`.
    pub kind: String,
}

/// Request durations from 100 µs to about 100 s: MCP calls on loopback take
/// a millisecond, LLM streams a minute.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Policy decision times from 100 ns to about 1.6 ms, by factors of 2: a
/// decision is a few map lookups and glob matches, a CEL condition more.
fn decision_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-7, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

/// Where `mesh_budget_remaining` is read from at scrape time: the budgets
/// of the policy in force and the ledger's spend against them.
pub struct BudgetSource {
    pub policies: Arc<PolicyStore>,
    pub ledger: Arc<Ledger>,
}

pub struct Metrics {
    registry: Registry,
    cost_usd: Family<AgentLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    requests: Family<RequestLabels, Counter>,
    tool_calls: Family<ToolCallLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    llm_tokens: Family<TokenLabels, Counter>,
    decision_seconds: Histogram,
    /// Agent-chosen label values, capped per agent.
    labels: labels::AgentLabelValues,
    pub ready: AtomicBool,
}

/// The `decision` label of a verdict.
pub fn decision_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Forwarded => "allow",
        Verdict::RefusedPolicy | Verdict::RefusedKernel | Verdict::Quarantined => "refuse",
        Verdict::Held => "hold",
        Verdict::NoOriginalDestination | Verdict::UpstreamFailed | Verdict::Malformed => "error",
    }
}

impl Metrics {
    pub fn new(governor: Option<Arc<Governor>>, budgets: Option<BudgetSource>) -> Metrics {
        let mut registry = Registry::default();
        let cost_usd = Family::<AgentLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "mesh_cost_usd",
            "Cost of settled LLM calls in USD, at the policy's prices",
            cost_usd.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "mesh_requests",
            "Requests (for opaque TCP: connections) by agent, protocol and decision",
            requests.clone(),
        );
        let tool_calls = Family::<ToolCallLabels, Counter>::default();
        registry.register(
            "mesh_tool_calls",
            "MCP tools/call requests by agent, server, tool, decision and the rule that decided",
            tool_calls.clone(),
        );
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "mesh_request_duration",
            "From a request's head to its response's end, by agent and protocol",
            Unit::Seconds,
            durations.clone(),
        );
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "mesh_llm_tokens",
            "LLM tokens by agent, provider, model and kind (input, output, cached_input), estimated ones included",
            llm_tokens.clone(),
        );
        let decision_seconds = decision_histogram();
        registry.register_with_unit(
            "mesh_policy_decision",
            "Time taken by one policy decision (the decide call of an L7 request)",
            Unit::Seconds,
            decision_seconds.clone(),
        );
        if let Some(governor) = governor {
            registry.register_collector(Box::new(CgroupCollector { governor }));
        }
        if let Some(source) = budgets {
            registry.register_collector(Box::new(BudgetCollector { source }));
        }
        Metrics {
            registry,
            cost_usd,
            requests,
            tool_calls,
            durations,
            llm_tokens,
            decision_seconds,
            labels: labels::AgentLabelValues::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// An opaque TCP connection (`protocol="tcp"`) or TLS passthrough.
    pub fn record_connection(&self, agent: Option<&str>, protocol: Protocol, verdict: Verdict) {
        self.record_request(agent, protocol, decision_label(verdict));
    }

    pub fn record_request(&self, agent: Option<&str>, protocol: Protocol, decision: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                agent: agent.unwrap_or("unknown").to_owned(),
                protocol: protocol.as_str().to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    pub fn record_tool_call(
        &self,
        agent: &str,
        server: &str,
        tool: &str,
        decision: &str,
        rule: &str,
    ) {
        // Names of refused calls are the agent's to invent: never labels.
        let (server, tool) = if decision == "allow" && self.labels.admit(agent, &[server, tool]) {
            (server, tool)
        } else {
            (labels::OTHER, labels::OTHER)
        };
        self.tool_calls
            .get_or_create(&ToolCallLabels {
                agent: agent.to_owned(),
                server: server.to_owned(),
                tool: tool.to_owned(),
                decision: decision.to_owned(),
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// One policy decision took `seconds` (`mesh_policy_decision_seconds`).
    pub fn observe_decision(&self, seconds: f64) {
        self.decision_seconds.observe(seconds);
    }

    pub fn observe_duration(&self, agent: &str, protocol: Protocol, seconds: f64) {
        self.durations
            .get_or_create(&DurationLabels {
                agent: agent.to_owned(),
                protocol: protocol.as_str().to_owned(),
            })
            .observe(seconds);
    }

    pub fn add_tokens(&self, agent: &str, provider: &str, model: &str, usage: &Usage) {
        let model = match self.labels.admit(agent, &[model]) {
            true => model,
            false => labels::OTHER,
        };
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached_input", usage.cached_input_tokens),
        ] {
            if n > 0 {
                self.llm_tokens
                    .get_or_create(&TokenLabels {
                        agent: agent.to_owned(),
                        provider: provider.to_owned(),
                        model: model.to_owned(),
                        kind: kind.to_owned(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// A settled call cost `usd` (`mesh_cost_usd_total`).
    pub fn add_cost(&self, agent: &str, usd: f64) {
        self.cost_usd
            .get_or_create(&AgentLabels {
                agent: agent.to_owned(),
            })
            .inc_by(usd);
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A counter family read from per-agent totals: name, help, the second label's
/// name (empty for none), and the (label value, count) pairs of an agent.
type CounterFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> Vec<(&'static str, u64)>,
);

/// Reads per-cgroup counters from the kernel maps on each scrape and sums
/// them per agent.
struct CgroupCollector {
    governor: Arc<Governor>,
}

impl std::fmt::Debug for CgroupCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CgroupCollector")
    }
}

impl Collector for CgroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let agents = match self.governor.status(false) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading kernel counters for /metrics");
                return Ok(());
            }
        };
        use prometheus_client::metrics::MetricType::Counter;
        let families: [CounterFamily; 5] = [
            (
                "mesh_cgroup_connects",
                "TCP connects by governed processes, by kernel verdict",
                "verdict",
                |t| vec![("redirected", t.redirected), ("refused", t.refused)],
            ),
            (
                "mesh_cgroup_bytes",
                "Bytes sent and received by governed sockets (IP packet length)",
                "direction",
                |t| vec![("in", t.bytes_in), ("out", t.bytes_out)],
            ),
            (
                "mesh_cgroup_packets_dropped",
                "Packets dropped in the kernel by quarantine",
                "",
                |t| vec![("", t.packets_dropped)],
            ),
            (
                "mesh_cgroup_udp",
                "UDP connects and addressed sends by governed processes, by kernel verdict",
                "verdict",
                |t| vec![("allowed", t.udp_allowed), ("refused", t.udp_refused)],
            ),
            (
                "mesh_cgroup_refusals",
                "Sockets (neither TCP nor UDP) and binds refused in the kernel",
                "kind",
                |t| vec![("socket", t.sockets_refused), ("bind", t.binds_refused)],
            ),
        ];
        for (name, help, label, values) in families {
            let mut m = encoder.encode_descriptor(name, help, None, Counter)?;
            for a in &agents {
                for (value, count) in values(&a.totals) {
                    let counter = ConstCounter::new(count);
                    if label.is_empty() {
                        counter.encode(m.encode_family(&[("agent", a.name.as_str())])?)?;
                    } else {
                        counter.encode(
                            m.encode_family(&[("agent", a.name.as_str()), (label, value)])?,
                        )?;
                    }
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "mesh_quarantined",
            "1 when any cgroup of the agent is quarantined",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for a in &agents {
            let labels = [("agent", a.name.as_str())];
            ConstGauge::new(i64::from(a.quarantined)).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `mesh_budget_remaining{agent,budget,unit}`: what each budget of the
/// policy in force has left in its window (USD for usd budgets).
struct BudgetCollector {
    source: BudgetSource,
}

impl std::fmt::Debug for BudgetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetCollector")
    }
}

impl Collector for BudgetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let policy = self.source.policies.snapshot();
        let mut m = encoder.encode_descriptor(
            "mesh_budget_remaining",
            "What a budget has left in its window (tokens, USD or calls)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for agent in policy.agents() {
            for budget in policy.budgets(agent) {
                let view = self.source.ledger.view(agent, budget);
                let remaining = match view.unit {
                    crate::budget::Unit::Usd => view.remaining as f64 / 1e9,
                    crate::budget::Unit::Tokens | crate::budget::Unit::Calls => {
                        view.remaining as f64
                    }
                };
                let labels = [
                    ("agent", agent),
                    ("budget", &*budget.name),
                    ("unit", view.unit.as_str()),
                ];
                ConstGauge::new(remaining).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(route(&metrics, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    match req.uri().path() {
        "/metrics" => match metrics.encode() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse()
                {
                    r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                r
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding failed\n".into(),
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            if metrics.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Binds the metrics listener (kept separate so start-up fails early).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_tool_call_rules_are_exported() {
        let m = Metrics::new(None, None);
        m.observe_decision(3e-7);
        m.record_tool_call("a", "s:1", "add", "refuse", "mcp[s].tools.deny[0]");
        let text = m.encode().unwrap();
        assert!(
            text.contains("mesh_policy_decision_seconds_bucket{le=\"4e-7\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_policy_decision_seconds_bucket{le=\"2e-7\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mesh_policy_decision_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("mesh_tool_calls_total{")
                && l.contains("rule=\"mcp[s].tools.deny[0]\"")
                && l.contains("tool=\"other\"")
                && l.ends_with(" 1")),
            "{text}"
        );
    }
}
