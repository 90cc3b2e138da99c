//! Charts drawn with plotters into SVG strings, inlined into the page: latency over time, throughput per
//! second and latency quantiles per second, each with the fault windows shaded.

use std::collections::HashSet;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::history::EventType;

use super::{Model, ReportError};

const SIZE: (u32, u32) = (1280, 300);
/// Scatter points kept at most; beyond that the page would grow by ~100 bytes a point for no visible gain.
const MAX_POINTS: usize = 30_000;

pub(crate) const OK: RGBColor = RGBColor(0x2e, 0x9d, 0x4f);
pub(crate) const FAIL: RGBColor = RGBColor(0xd6, 0x45, 0x45);
pub(crate) const INFO: RGBColor = RGBColor(0xd9, 0xa4, 0x00);
const P50: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const P95: RGBColor = RGBColor(0xe0, 0x7b, 0x00);
const P99: RGBColor = RGBColor(0xb0, 0x1f, 0x5a);
/// The same hues as the page's `.c0`..`.c5` fault classes.
const FAULTS: [RGBColor; 6] = [
    RGBColor(0x7b, 0x4f, 0xd6),
    RGBColor(0x1f, 0x8f, 0xb4),
    RGBColor(0xc0, 0x56, 0x21),
    RGBColor(0x5a, 0x8a, 0x1f),
    RGBColor(0xb4, 0x1f, 0x8f),
    RGBColor(0x6b, 0x6b, 0x6b),
];

fn plot_err<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Plot {
        chart,
        message: e.to_string(),
    }
}

fn end_s(model: &Model) -> f64 {
    (model.end as f64 / 1e9).max(0.001)
}

/// Fault windows as (start s, end s, color, label), for shading.
fn fault_spans(model: &Model) -> Vec<(f64, f64, RGBColor, String)> {
    model
        .windows
        .iter()
        .map(|w| {
            (
                w.start as f64 / 1e9,
                w.end(model.end) as f64 / 1e9,
                FAULTS[w.color % FAULTS.len()],
                w.fault.clone(),
            )
        })
        .collect()
}

/// A log axis from the decade below `lo` to the decade above `hi`: plotters labels only some points of a
/// log axis, and whole decades make sure the labels it picks are there.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    // The 0.9 and 1.1 keep a point that sits exactly on a decade off the frame.
    let lo = 10f64.powf((lo * 0.9).max(0.001).log10().floor());
    let hi = 10f64.powf((hi * 1.1).max(lo).log10().ceil());
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

fn ms_label(v: &f64) -> String {
    if *v >= 1000.0 {
        format!("{}s", v / 1000.0)
    } else {
        format!("{v}")
    }
}

/// Every completed op's latency against its invocation time, log scale, one color per outcome.
pub(crate) fn latency(model: &Model) -> Result<String, ReportError> {
    let chart_name = "latency";
    let err = plot_err(chart_name);
    let x_max = end_s(model);
    let mut points: [Vec<(f64, f64)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    // Points landing on the same pixel (and outcome) are drawn once: lossless to the eye, and it keeps a
    // 100,000-op history to a few thousand circles.
    let mut seen: HashSet<(u32, i32, u8)> = HashSet::new();
    for op in &model.ops {
        let Some(lat) = Model::latency(op) else { continue };
        let ms = (lat as f64 / 1e6).max(0.001);
        let t = op.invoke.time as f64 / 1e9;
        let series = match op.outcome() {
            EventType::Ok => 0u8,
            EventType::Fail => 1,
            _ => 2,
        };
        let key = ((t / x_max * 1200.0) as u32, (ms.log10() * 80.0).round() as i32, series);
        if seen.insert(key) {
            points[usize::from(series)].push((t, ms));
        }
    }
    let total: usize = points.iter().map(Vec::len).sum();
    if total > MAX_POINTS {
        for p in &mut points {
            let keep = p.len() * MAX_POINTS / total;
            let step = p.len().div_ceil(keep.max(1));
            *p = p.iter().step_by(step.max(1)).copied().collect();
        }
    }
    let (lo, hi) = points
        .iter()
        .flatten()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y)));
    let (y_lo, y_hi) = if total == 0 { (0.1, 1000.0) } else { log_range(lo, hi) };

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by invocation time", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("latency (ms)")
            .y_label_formatter(&ms_label)
            .light_line_style(WHITE)
            .draw()
            .map_err(&err)?;
        for (a, b, c, label) in fault_spans(model) {
            chart
                .draw_series([Rectangle::new(
                    [(a, y_lo), (b.max(a + x_max / 1000.0), y_hi)],
                    c.mix(0.14).filled(),
                )])
                .map_err(&err)?;
            chart
                .draw_series([Text::new(label, (a, y_hi), ("sans-serif", 11).into_font().color(&c))])
                .map_err(&err)?;
        }
        for (series, (color, name)) in points.iter().zip([(OK, "ok"), (FAIL, "fail"), (INFO, "info")]) {
            chart
                .draw_series(series.iter().map(|&p| Circle::new(p, 2, color.mix(0.7).filled())))
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        legend(&mut chart).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

type Chart2d<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

fn legend<'a, 'b: 'a, Y: Ranged>(chart: &mut Chart2d<'a, 'b, Y>) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 12))
        .draw()
}

/// Completions per second by outcome (unknown outcomes that never completed are not counted).
pub(crate) fn throughput(model: &Model) -> Result<String, ReportError> {
    let err = plot_err("throughput");
    let x_max = end_s(model);
    let buckets = (x_max.ceil() as usize).max(1);
    let mut counts = [vec![0u32; buckets], vec![0u32; buckets], vec![0u32; buckets]];
    for op in &model.ops {
        let Some(c) = &op.complete else { continue };
        let b = ((c.time / 1_000_000_000) as usize).min(buckets - 1);
        let series = match c.kind {
            EventType::Ok => 0,
            EventType::Fail => 1,
            _ => 2,
        };
        counts[series][b] += 1;
    }
    let y_max = counts.iter().flatten().copied().max().unwrap_or(0) as f64 * 1.15 + 1.0;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput (completions per second)", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("ops/s")
            .light_line_style(WHITE)
            .draw()
            .map_err(&err)?;
        shade(&mut chart, model, 0.0, y_max, x_max).map_err(&err)?;
        for (series, (color, name)) in counts.iter().zip([(OK, "ok"), (FAIL, "fail"), (INFO, "info")]) {
            // Each count is plotted at the middle of its second.
            let line = series.iter().enumerate().map(|(i, &n)| (i as f64 + 0.5, f64::from(n)));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        legend(&mut chart).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// p50/p95/p99 latency per second of invocation, over ops with a definite outcome (ok or fail): unknown
/// outcomes are mostly timeouts and would only show the client's deadline.
pub(crate) fn quantiles(model: &Model) -> Result<String, ReportError> {
    let err = plot_err("quantiles");
    let x_max = end_s(model);
    let buckets = (x_max.ceil() as usize).max(1);
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for op in &model.ops {
        if !matches!(op.outcome(), EventType::Ok | EventType::Fail) {
            continue;
        }
        let Some(l) = Model::latency(op) else { continue };
        let b = ((op.invoke.time / 1_000_000_000) as usize).min(buckets - 1);
        lat[b].push((l as f64 / 1e6).max(0.001));
    }
    let qs = [0.5, 0.95, 0.99];
    // Per quantile, runs of consecutive non-empty seconds: an empty second breaks the line.
    let mut lines: [Vec<Vec<(f64, f64)>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    let mut prev_empty = true;
    for (i, l) in lat.iter_mut().enumerate() {
        if l.is_empty() {
            prev_empty = true;
            continue;
        }
        l.sort_unstable_by(f64::total_cmp);
        for (qi, q) in qs.iter().enumerate() {
            let v = l[((l.len() - 1) as f64 * q).round() as usize];
            lo = lo.min(v);
            hi = hi.max(v);
            if prev_empty {
                lines[qi].push(Vec::new());
            }
            if let Some(run) = lines[qi].last_mut() {
                run.push((i as f64 + 0.5, v));
            }
        }
        prev_empty = false;
    }
    let (y_lo, y_hi) = if hi == 0.0 { (0.1, 1000.0) } else { log_range(lo, hi) };
    let mut buf = String::new();
    {
        let root: DrawingArea<SVGBackend, Shift> = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency quantiles per second (ok and fail)", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("latency (ms)")
            .y_label_formatter(&ms_label)
            .light_line_style(WHITE)
            .draw()
            .map_err(&err)?;
        for (a, b, c, _) in fault_spans(model) {
            chart
                .draw_series([Rectangle::new(
                    [(a, y_lo), (b.max(a + x_max / 1000.0), y_hi)],
                    c.mix(0.14).filled(),
                )])
                .map_err(&err)?;
        }
        for (runs, (color, name)) in lines.iter().zip([(P50, "p50"), (P95, "p95"), (P99, "p99")]) {
            for (k, run) in runs.iter().enumerate() {
                let s = chart
                    .draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))
                    .map_err(&err)?;
                if k == 0 {
                    s.label(name)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
                }
                // Single-second runs draw no line; a dot keeps them visible.
                chart
                    .draw_series(run.iter().map(|&p| Circle::new(p, 2, color.filled())))
                    .map_err(&err)?;
            }
        }
        legend(&mut chart).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// Shades fault windows on a linear chart, each labelled at the top.
fn shade(
    chart: &mut Chart2d<'_, '_, plotters::coord::types::RangedCoordf64>,
    model: &Model,
    y_lo: f64,
    y_hi: f64,
    x_max: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    for (a, b, c, label) in fault_spans(model) {
        chart.draw_series([Rectangle::new(
            [(a, y_lo), (b.max(a + x_max / 1000.0), y_hi)],
            c.mix(0.14).filled(),
        )])?;
        chart.draw_series([Text::new(label, (a, y_hi), ("sans-serif", 11).into_font().color(&c))])?;
    }
    Ok(())
}
