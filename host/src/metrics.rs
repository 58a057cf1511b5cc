//! The gateway's metrics, in Prometheus's terms (`prometheus-client`), served by the admin
//! listener at `/metrics` in the text exposition format.
//!
//! Each subsystem records into its own part ([`RequestMetrics`], [`PluginMetrics`],
//! [`AuditMetrics`], [`ReloadMetrics`]); the parts are cheap clones of the same counters, so
//! recording is an atomic add (and, for a labelled family, a read-locked map lookup).
//! Cardinality is bounded by construction: labels are endpoint names from the route table
//! (never paths or ids), status codes, plugin names from the configuration and fixed kind
//! names. Caller names never appear.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Requests by endpoint, decision and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    /// `allow`, `deny` or `error`, as in the audit record.
    pub decision: &'static str,
    pub status: u16,
}

/// One endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// A kind of failure (engine errors, reload results).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// One plugin's hook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    /// `request`, `response`, `audit`, or `init` (loading and describing).
    pub hook: &'static str,
}

/// One plugin's failures of one kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub plugin: String,
    /// `trap`, `timeout`, `memory`, `malformed` or `init`.
    pub kind: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies of whole requests and of the engine: 100 µs to about 6 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 12))
}

/// Latencies of plugin calls and audit writes: 10 µs to about 0.6 s.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.5, 12))
}

/// What the pipeline and the listeners record.
#[derive(Clone)]
pub struct RequestMetrics {
    pub requests: Family<RequestLabels, Counter>,
    /// From the request's arrival to its response head (a stream's body is not included).
    pub duration: Histograms<EndpointLabels>,
    /// From sending to the engine to its response head.
    pub upstream: Histogram,
    pub engine_errors: Family<KindLabels, Counter>,
    pub connections: Gauge,
    /// Streamed responses open (logs -f, events, wait, stats, ...).
    pub streams: Gauge,
    /// Attach and exec tunnels open.
    pub tunnels: Gauge,
}

impl RequestMetrics {
    /// One answered request: its count by endpoint, decision and status, its latency to the
    /// response head, and the engine's share when it reached the engine.
    pub fn record(
        &self,
        endpoint: &'static str,
        decision: &'static str,
        status: u16,
        elapsed: std::time::Duration,
        engine: Option<std::time::Duration>,
    ) {
        let labels = RequestLabels {
            endpoint,
            decision,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
        if let Some(t) = engine {
            self.upstream.observe(t.as_secs_f64());
        }
    }
}

/// What the plugin runtime records.
#[derive(Clone)]
pub struct PluginMetrics {
    pub calls: Histograms<PluginLabels>,
    pub failures: Family<FailureLabels, Counter>,
}

/// What the audit trail records.
#[derive(Clone)]
pub struct AuditMetrics {
    pub appends: Counter,
    /// One group commit (a transaction of one or more records).
    pub write: Histogram,
    pub queue: Gauge,
    pub dropped: Counter,
}

impl Default for AuditMetrics {
    /// Metrics of their own that nobody reads (a store opened outside a gateway).
    fn default() -> Self {
        Metrics::new().audit
    }
}

/// What reloading the configuration records.
#[derive(Clone)]
pub struct ReloadMetrics {
    /// The chain in use: 1 at start, one more per successful reload.
    pub generation: Gauge,
    pub reloads: Family<KindLabels, Counter>,
    /// 1 when the last reload (or the start) succeeded, 0 when it failed.
    pub last_ok: Gauge,
    pub last_time: Gauge,
}

/// Every metric of one gateway, registered once.
pub struct Metrics {
    registry: Registry,
    pub request: RequestMetrics,
    pub plugin: PluginMetrics,
    pub audit: AuditMetrics,
    pub reload: ReloadMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under the `portcullis_` prefix.
    pub fn new() -> Self {
        let request = RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(request_buckets),
            upstream: request_buckets(),
            engine_errors: Family::default(),
            connections: Gauge::default(),
            streams: Gauge::default(),
            tunnels: Gauge::default(),
        };
        let plugin = PluginMetrics {
            calls: Family::new_with_constructor(call_buckets),
            failures: Family::default(),
        };
        let audit = AuditMetrics {
            appends: Counter::default(),
            write: call_buckets(),
            queue: Gauge::default(),
            dropped: Counter::default(),
        };
        let reload = ReloadMetrics {
            generation: Gauge::default(),
            reloads: Family::default(),
            last_ok: Gauge::default(),
            last_time: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("portcullis");
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by endpoint, decision and status",
            request.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "From a request's arrival to its response head",
            Unit::Seconds,
            request.duration.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "From sending a request to the engine to its response head",
            Unit::Seconds,
            request.upstream.clone(),
        );
        r.register(
            "engine_errors",
            "Requests the engine could not answer, by kind",
            request.engine_errors.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open",
            request.connections.clone(),
        );
        r.register(
            "streams_open",
            "Streamed responses open (logs -f, events, wait, stats)",
            request.streams.clone(),
        );
        r.register(
            "tunnels_open",
            "Attach and exec tunnels open",
            request.tunnels.clone(),
        );
        r.register_with_unit(
            "plugin_call_duration",
            "Plugin calls, by plugin and hook",
            Unit::Seconds,
            plugin.calls.clone(),
        );
        r.register(
            "plugin_failures",
            "Plugin calls that gave no verdict, by plugin and kind",
            plugin.failures.clone(),
        );
        r.register(
            "audit_appends",
            "Audit records written",
            audit.appends.clone(),
        );
        r.register_with_unit(
            "audit_write_duration",
            "Audit group commits (one transaction each)",
            Unit::Seconds,
            audit.write.clone(),
        );
        r.register(
            "audit_queue_depth",
            "Audit records waiting for the writer",
            audit.queue.clone(),
        );
        r.register(
            "audit_dropped",
            "Audit records lost (queue full with async durability, or a failed write)",
            audit.dropped.clone(),
        );
        r.register(
            "config_generation",
            "The configuration in use: 1 at start, one more per successful reload",
            reload.generation.clone(),
        );
        r.register(
            "config_reloads",
            "Reloads, by result (ok, failed)",
            reload.reloads.clone(),
        );
        r.register(
            "config_last_reload_success",
            "1 when the last reload succeeded (or none was tried), 0 when it failed",
            reload.last_ok.clone(),
        );
        r.register(
            "config_last_reload_timestamp_seconds",
            "When the configuration was last loaded (Unix time)",
            reload.last_time.clone(),
        );
        Self {
            registry,
            request,
            plugin,
            audit,
            reload,
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counts one open thing (a connection, a stream) in `gauge` while it lives.
pub struct Open(Gauge);

impl Open {
    /// Counts one more in `gauge` until dropped.
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_prometheus_text_format_with_bounded_labels() {
        let m = Metrics::new();
        m.request
            .requests
            .get_or_create(&RequestLabels {
                endpoint: "container.create",
                decision: "deny",
                status: 403,
            })
            .inc();
        m.plugin
            .calls
            .get_or_create(&PluginLabels {
                plugin: "baseline".into(),
                hook: "request",
            })
            .observe(0.0002);
        let open = Open::new(&m.request.streams);
        let text = m.encode();
        assert!(
            text.contains(
                "portcullis_requests_total{endpoint=\"container.create\",decision=\"deny\",status=\"403\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE portcullis_plugin_call_duration_seconds histogram"));
        assert!(text.contains(
            "portcullis_plugin_call_duration_seconds_count{plugin=\"baseline\",hook=\"request\"} 1"
        ));
        assert!(text.contains("portcullis_streams_open 1"), "{text}");
        drop(open);
        assert!(m.encode().contains("portcullis_streams_open 0"));
    }
}
