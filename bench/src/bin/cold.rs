//! `portcullis-bench-cold`: how much slower the same work runs right after the thread was
//! idle than back to back, on this machine, without portcullis or wasmtime involved.
//!
//! A gateway at a low request rate runs each request's work after a pause (the engine works
//! for milliseconds between two requests), and every figure measured inside the gateway is
//! paid in that state. This control separates the machine's share from ours: it times
//! parsing and re-serializing the docker CLI's container create body (1.6 KB of JSON, about
//! what a plugin does with it) back to back, after sleeping, and after spinning on the
//! clock for the same time (no halt, but timer interrupts still arrive).
//!
//! ```text
//! cargo run --release -p portcullis-bench --bin portcullis-bench-cold -- --pause-us 1000
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

/// The docker CLI's create request, as `portcullis plugin bench` takes it.
const REQUEST: &str = include_str!("../../requests/cli-create.json");

#[derive(Parser)]
#[command(about = "Times the same JSON work back to back and after an idle pause")]
struct Args {
    /// Samples per measurement.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// The pause before each sample of the idle measurements, in µs.
    #[arg(long, default_value_t = 1000)]
    pause_us: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let request: serde_json::Value = serde_json::from_str(REQUEST)?;
    let body = request["body"]
        .as_str()
        .context("requests/cli-create.json has no body")?
        .to_owned();
    let work = || {
        let v: serde_json::Value = serde_json::from_str(&body).expect("the body is JSON");
        std::hint::black_box(v.to_string().len());
    };
    let pause = Duration::from_micros(args.pause_us);
    let measure = |before: &dyn Fn()| {
        let mut samples: Vec<Duration> = (0..args.iterations)
            .map(|_| {
                before();
                let t = Instant::now();
                work();
                t.elapsed()
            })
            .collect();
        samples.sort();
        let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        (at(0.5), at(0.9))
    };
    let rows = [
        ("back to back", measure(&|| {})),
        ("after sleeping", measure(&|| std::thread::sleep(pause))),
        (
            "after spinning",
            measure(&|| {
                let start = Instant::now();
                while start.elapsed() < pause {
                    std::hint::spin_loop();
                }
            }),
        ),
    ];
    println!(
        "parse + serialize the docker CLI's create body ({} bytes), {} samples, pause {} µs",
        body.len(),
        args.iterations,
        args.pause_us
    );
    for (name, (p50, p90)) in rows {
        println!("{name:>15}: p50 {p50:6.1} µs  p90 {p90:6.1} µs");
    }
    Ok(())
}
