//! The run's report: its settings, the metrics of every iteration as a
//! table and as plots, and its pictures, as `report/index.html` (plots
//! inline, opens in any browser) and `report/report.md` (plots as SVG files
//! beside it), plus `report/metrics.json` for scripts.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};
use splatdiff_scene::atomic::write_bytes_atomic;

use crate::error::Result;

/// One iteration's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IterationMetrics {
    pub keyframe_reprojection: Option<f64>,
    pub propagated_reprojection: Option<f64>,
    pub splat_reprojection: Option<f64>,
    pub refit_psnr: Option<f64>,
    pub refit_ssim: Option<f64>,
    pub change_psnr: Option<f64>,
    pub change_ssim: Option<f64>,
}

/// One finished iteration as the report shows it (paths relative to the work folder).
#[derive(Clone, Debug, Serialize)]
pub struct IterationSummary {
    pub index: usize,
    pub strength: f64,
    pub keyframes: Vec<String>,
    pub metrics: IterationMetrics,
    pub keyframe_sheet: String,
    pub contact_sheet: String,
    pub turntable: String,
    pub splats: String,
}

/// What the report is made of.
pub struct ReportInput<'a> {
    pub title: &'a str,
    /// The run's settings as recorded in the manifest.
    pub settings: &'a Value,
    /// Reprojection error of the capture's own renders: the floor that
    /// lighting and sampling leave even for a perfectly consistent object.
    pub capture_reprojection: Option<f64>,
    pub iterations: &'a [IterationSummary],
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

/// A line plot of several series over iterations, as standalone SVG.
fn line_plot(
    title: &str,
    y_label: &str,
    series: &[(&str, &str, Vec<Option<f64>>)],
    floor: Option<(&str, f64)>,
) -> String {
    let (w, h, left, right, top, bottom) = (520.0, 260.0, 60.0, 150.0, 30.0, 40.0);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0).max(1);
    let values: Vec<f64> =
        series.iter().flat_map(|s| s.2.iter().flatten().copied()).chain(floor.map(|f| f.1)).collect();
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(1e-6);
    // Errors and PSNRs are never negative: the axis does not go below 0 for them.
    let (lo, hi) = (if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad);
    let px = |i: usize| left + (w - left - right) * if n > 1 { i as f64 / (n - 1) as f64 } else { 0.5 };
    let py = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo));
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="white"/><text x="{left}" y="18" font-size="13" font-weight="bold">{title}</text>
<line x1="{left}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/><line x1="{left}" y1="{top}" x2="{left}" y2="{y0}" stroke="#444"/>
<text x="12" y="{ym}" transform="rotate(-90 12 {ym})" text-anchor="middle">{y_label}</text>
"##,
        y0 = h - bottom,
        x1 = w - right,
        ym = (top + h - bottom) / 2.0
    );
    for t in 0..=4 {
        let v = lo + (hi - lo) * t as f64 / 4.0;
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, left - 4.0, py(v) + 4.0, short(v));
    }
    for i in 0..n {
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(i), h - bottom + 16.0, i + 1);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">iteration</text>"#,
        (left + w - right) / 2.0,
        h - 6.0
    );
    if let Some((label, v)) = floor {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#999" stroke-dasharray="4 3"/>"##,
            w - right,
            y = py(v)
        );
        let _ = writeln!(svg, r##"<text x="{}" y="{}" fill="#777">{label}</text>"##, w - right + 6.0, py(v) + 4.0);
    }
    for (k, (label, colour, values)) in series.iter().enumerate() {
        let points: Vec<String> =
            values.iter().enumerate().filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", px(i), py(v)))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').expect("formatted with a comma");
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
        let ly = top + 14.0 * k as f64 + 10.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="3" fill="{colour}"/><text x="{}" y="{}">{label}</text>"#,
            w - right + 6.0,
            ly - 4.0,
            w - right + 20.0,
            ly
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn short(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The two plots: reprojection error and PSNR over iterations.
fn plots(input: &ReportInput) -> (String, String) {
    let col =
        |f: fn(&IterationMetrics) -> Option<f64>| input.iterations.iter().map(|i| f(&i.metrics)).collect::<Vec<_>>();
    let reprojection = line_plot(
        "Reprojection error (lower = more consistent)",
        "mean |RGB difference|",
        &[
            ("keyframes", "#d62728", col(|m| m.keyframe_reprojection)),
            ("propagated", "#1f77b4", col(|m| m.propagated_reprojection)),
            ("splat renders", "#2ca02c", col(|m| m.splat_reprojection)),
        ],
        input.capture_reprojection.map(|v| ("capture", v)),
    );
    let quality = line_plot(
        "Refit and change from the original",
        "PSNR (dB)",
        &[("refit (held out)", "#9467bd", col(|m| m.refit_psnr)), ("vs original", "#8c564b", col(|m| m.change_psnr))],
        None,
    );
    (reprojection, quality)
}

const TABLE_HEAD: [&str; 9] = [
    "iteration",
    "strength",
    "keyframe reproj.",
    "propagated reproj.",
    "splat reproj.",
    "refit PSNR",
    "refit SSIM",
    "PSNR vs original",
    "SSIM vs original",
];

fn table_rows(input: &ReportInput) -> Vec<[String; 9]> {
    let mut rows = vec![[
        "capture".into(),
        "–".into(),
        "–".into(),
        "–".into(),
        fmt(input.capture_reprojection, 4),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
    ]];
    for it in input.iterations {
        let m = &it.metrics;
        rows.push([
            it.index.to_string(),
            format!("{:.2}", it.strength),
            fmt(m.keyframe_reprojection, 4),
            fmt(m.propagated_reprojection, 4),
            fmt(m.splat_reprojection, 4),
            fmt(m.refit_psnr, 2),
            fmt(m.refit_ssim, 3),
            fmt(m.change_psnr, 2),
            fmt(m.change_ssim, 3),
        ]);
    }
    rows
}

/// Writes `report/` in `work`; returns the paths written (html, markdown).
pub fn write_report(work: &Path, input: &ReportInput) -> Result<Value> {
    let dir = work.join("report");
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::PipelineError::io(&dir, e))?;
    let (reprojection, quality) = plots(input);
    write_bytes_atomic(&dir.join("reprojection.svg"), reprojection.as_bytes())?;
    write_bytes_atomic(&dir.join("quality.svg"), quality.as_bytes())?;
    let settings = serde_json::to_string_pretty(input.settings).expect("JSON value serialises");
    let rows = table_rows(input);

    let mut md = format!("# splatdiff run: {}\n\n", input.title);
    md.push_str("Reprojection error: mean absolute RGB difference (0..1) between views of the same surface point, through the capture's depth and cameras (keyframes: every pair; frames and renders: neighbouring views). Refit: the splats against propagated frames held out of training. vs original: the splats' renders against the capture's renders, inside the object mask.\n\n");
    let _ = writeln!(md, "| {} |\n|{}", TABLE_HEAD.join(" | "), "---|".repeat(TABLE_HEAD.len()));
    for r in &rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    md.push_str("\n![Reprojection error](reprojection.svg)\n\n![PSNR](quality.svg)\n\n");
    for it in input.iterations {
        let _ = writeln!(md, "## Iteration {} (strength {:.2})\n", it.index, it.strength);
        let _ = writeln!(
            md,
            "Keyframes {}: before (top) and after (bottom)\n\n![keyframes](../{})\n",
            it.keyframes.join(", "),
            it.keyframe_sheet
        );
        let _ = writeln!(
            md,
            "Splat renders of every view\n\n![contact sheet](../{})\n\n![turntable](../{})\n\nSplats: `{}`\n",
            it.contact_sheet, it.turntable, it.splats
        );
    }
    let _ = writeln!(md, "## Settings\n\n```json\n{settings}\n```");

    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>splatdiff: {t}</title>\
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%;image-rendering:auto}}\
.plots{{display:flex;flex-wrap:wrap;gap:12px}}pre{{background:#f4f4f4;padding:8px;overflow:auto}}</style></head><body>\
<h1>splatdiff run: {t}</h1>",
        t = html_escape(input.title)
    );
    let _ = write!(html, "<table><tr>{}</tr>", TABLE_HEAD.iter().map(|h| format!("<th>{h}</th>")).collect::<String>());
    for r in &rows {
        let _ = write!(html, "<tr>{}</tr>", r.iter().map(|c| format!("<td>{c}</td>")).collect::<String>());
    }
    let _ = write!(html, "</table><p>Reprojection error: mean absolute RGB difference between views of the same surface point through the capture's depth and cameras (lower = more consistent). Refit: splats vs held-out propagated frames. vs original: splat renders vs the capture.</p><div class=\"plots\">{reprojection}{quality}</div>");
    for it in input.iterations {
        let _ = write!(
            html,
            "<h2>Iteration {i} (strength {s:.2})</h2><p>Keyframes {k}: before (top) and after (bottom)</p><img src=\"../{ks}\">\
<p>Splat renders</p><img src=\"../{t}\"> <img src=\"../{cs}\"><p>Splats: <code>{sp}</code></p>",
            i = it.index,
            s = it.strength,
            k = html_escape(&it.keyframes.join(", ")),
            ks = it.keyframe_sheet,
            t = it.turntable,
            cs = it.contact_sheet,
            sp = html_escape(&it.splats)
        );
    }
    let _ = writeln!(html, "<h2>Settings</h2><pre>{}</pre></body></html>", html_escape(&settings));

    write_bytes_atomic(&dir.join("report.md"), md.as_bytes())?;
    write_bytes_atomic(&dir.join("index.html"), html.as_bytes())?;
    let metrics = json!({
        "capture_reprojection": input.capture_reprojection,
        "iterations": input.iterations,
    });
    write_bytes_atomic(
        &dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics).expect("serialises").as_bytes(),
    )?;
    Ok(
        json!({ "html": dir.join("index.html"), "markdown": dir.join("report.md"), "metrics": dir.join("metrics.json") }),
    )
}
