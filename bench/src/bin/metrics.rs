//! `portcullis-bench-metrics`: what the metrics cost per request, measured on the gateway's
//! own recording code (`portcullis::metrics`) without a gateway around it, so the figure is
//! not lost in the noise of a whole request (hundreds of µs).
//!
//! Per simulated request it does what the gateway does: [`RequestMetrics::record`] (count by
//! endpoint, decision and status; latency; engine time), three plugin-call observations (the
//! default chain's plugins on a create) and a connection opened and closed (the docker CLI
//! opens one per command: an upper bound). It runs on 1 and 2 threads at once (contention on
//! the same label sets), and times one scrape of everything recorded.
//!
//! ```text
//! cargo run --release -p portcullis-bench --bin portcullis-bench-metrics
//! ```

use std::time::{Duration, Instant};

use portcullis::metrics::{Metrics, Open, PluginLabels, RequestMetrics};
use prometheus_client::metrics::histogram::Histogram;

/// Simulated requests per thread.
const REQUESTS: u32 = 2_000_000;

/// Endpoints spread over, as a mixed workload has them.
const ENDPOINTS: [&str; 8] = [
    "system.ping",
    "container.create",
    "container.start",
    "container.list",
    "container.inspect",
    "container.wait",
    "container.attach",
    "image.list",
];

fn simulate(
    m: &RequestMetrics,
    calls: &[Histogram],
    connections: &prometheus_client::metrics::gauge::Gauge,
    n: u32,
) {
    for i in 0..n {
        let open = Open::new(connections);
        let endpoint = ENDPOINTS[i as usize % ENDPOINTS.len()];
        for c in calls {
            c.observe(0.000_07);
        }
        m.record(
            endpoint,
            if i % 7 == 0 { "deny" } else { "allow" },
            if i % 7 == 0 { 403 } else { 200 },
            Duration::from_micros(300 + u64::from(i % 200)),
            Some(Duration::from_micros(150)),
        );
        drop(open);
    }
}

fn main() {
    let metrics = Metrics::new();
    let calls: Vec<Histogram> = ["labels", "tenancy", "baseline"]
        .iter()
        .map(|p| {
            let labels = PluginLabels {
                plugin: (*p).into(),
                hook: "request",
            };
            metrics.plugin.calls.get_or_create(&labels).clone()
        })
        .collect();
    // Warm: every label set exists, as it does in a gateway that has served a while.
    simulate(
        &metrics.request,
        &calls,
        &metrics.request.connections,
        10_000,
    );
    println!("| threads | requests | ns per request (recording) |");
    println!("|---|---|---|");
    for threads in [1u32, 2] {
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    simulate(
                        &metrics.request,
                        &calls,
                        &metrics.request.connections,
                        REQUESTS,
                    )
                });
            }
        });
        let elapsed = started.elapsed();
        // Wall time over the requests of one thread: what each request waited on average.
        let per = elapsed.as_nanos() as f64 / f64::from(REQUESTS);
        println!("| {threads} | {} | {per:.0} |", REQUESTS * threads);
    }
    let started = Instant::now();
    let text = metrics.encode();
    println!(
        "\none scrape: {} bytes in {} µs",
        text.len(),
        started.elapsed().as_micros()
    );
}
