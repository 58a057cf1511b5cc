//! The latency plot: p50 per scenario point (grouped) and configuration (one colour each), on
//! a log scale, as a PNG. Text is drawn with `ab_glyph` from a TrueType font read at run time
//! (DejaVu Sans, Debian's `fonts-dejavu-core`), so no fontconfig or freetype is needed.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::report::Results;

/// Where the font is looked for; the first that exists is used.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Pixels to the right of the chart for the legend.
const LEGEND_WIDTH: u32 = 190;

/// A short name for a scenario point, for the x axis.
fn short(scenario: &str) -> &str {
    match scenario {
        "GET /_ping" => "ping",
        "GET /containers/json?all=1" => "list",
        "create + remove" => "create+rm",
        "denied create" => "denied",
        other => other,
    }
}

/// Registers the font once (plotters wants `'static` bytes: the file is leaked, once).
fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONTS
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no DejaVu Sans font (apt-get install fonts-dejavu-core; looked in {})",
                    FONTS.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws the p50 latency of every point of `r` to `out` (PNG).
pub fn latency(r: &Results, out: &Path) -> Result<()> {
    register_font()?;
    // Groups: the scenario points in run order; bars: the configurations in report order.
    let mut groups: Vec<(String, usize)> = Vec::new();
    for l in &r.latency {
        let key = (l.scenario.clone(), l.concurrency);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let configs = &r.meta.configs;
    if groups.is_empty() || configs.is_empty() {
        return Err(anyhow!("no latency figures to plot"));
    }
    let values: Vec<f64> = r
        .latency
        .iter()
        .map(|l| l.p50_us)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        / 2.0;
    let hi = values.iter().copied().fold(0.0, f64::max) * 3.0;

    let width = (groups.len() as u32 * configs.len() as u32 * 18).clamp(1000, 2400);
    let root = BitMapBackend::new(out, (width + LEGEND_WIDTH, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend gets its own column on the right, so it never hides a bar.
    let (area, legend) = root.split_horizontally(width);
    let title = format!(
        "portcullis-bench: p50 latency (µs, log scale), {} — median of {} round(s)",
        r.meta.date, r.meta.rounds
    );
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("p50 µs")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;

    let slot = 0.84 / configs.len() as f64;
    for (ci, config) in configs.iter().enumerate() {
        let color = Palette99::pick(ci).to_rgba();
        let bars: Vec<_> = groups
            .iter()
            .enumerate()
            .filter_map(|(gi, (scenario, c))| {
                let l = r.latency.iter().find(|l| {
                    &l.scenario == scenario && l.concurrency == *c && &l.config == config
                })?;
                (l.p50_us.is_finite() && l.p50_us > 0.0).then(|| {
                    let x0 = gi as f64 + 0.08 + ci as f64 * slot;
                    Rectangle::new([(x0, lo), (x0 + slot * 0.9, l.p50_us)], color.filled())
                })
            })
            .collect();
        chart.draw_series(bars)?;
        let y = 60 + ci as i32 * 24;
        legend.draw(&Rectangle::new([(10, y), (26, y + 16)], color.filled()))?;
        legend.draw(&Text::new(
            config.as_str(),
            (34, y),
            ("sans-serif", 15).into_font(),
        ))?;
    }

    // The group names under the axis, centred on each group.
    let style = TextStyle::from(("sans-serif", 15).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ),
    );
    for (gi, (scenario, c)) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(gi as f64 + 0.5, lo));
        root.draw(&Text::new(
            format!("{} c={c}", short(scenario)),
            (x, y + 10),
            style.clone(),
        ))?;
    }
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        if !FONTS.iter().any(|p| Path::new(p).is_file()) {
            eprintln!("no DejaVu font here: nothing to draw with");
            return;
        }
        let out =
            std::env::temp_dir().join(format!("portcullis-bench-plot-{}.png", std::process::id()));
        latency(&crate::report::tests::sample(1.0, 500), &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }
}
