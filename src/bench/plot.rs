//! `fum bench`'s plots: the real-time factor against network size, one series per backend and
//! device, from the scaling cases of one or more results files (a CPU run and a GPU run, say);
//! and where each case's step time goes, stage by stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::BenchReport;

/// One point: neurons, and the real-time factor's median, min and max over the repeats.
type Point = (f64, f64, f64, f64);

/// Writes `stem`.svg and `stem`.png from the scaling cases of `reports`; the files written.
pub fn rtf_against_size(reports: &[BenchReport], stem: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for c in reports.iter().flat_map(|r| &r.cases).filter(|c| c.name.starts_with("scaling_")) {
        let rtf = c.real_time_factor;
        series.entry(format!("{}, {}", c.backend, c.device)).or_default().push((c.neurons as f64, rtf.median, rtf.min, rtf.max));
    }
    anyhow::ensure!(!series.is_empty(), "no scaling cases to plot (`fum bench --suite scaling` measures them)");
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    register_font();
    let (svg, png) = (stem.with_extension("svg"), stem.with_extension("png"));
    draw(SVGBackend::new(&svg, (900, 600)).into_drawing_area(), &series)?;
    draw(BitMapBackend::new(&png, (900, 600)).into_drawing_area(), &series)?;
    Ok(vec![svg, png])
}

/// The font travels with the binary: plotters draws text with it, with no system font library.
fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).unwrap_or_else(|_| panic!("the bundled font is valid")));
}

/// A case's label and its microseconds per step in each stage (`Stage::ALL`'s order).
type Stages = (String, Vec<f64>);

/// Writes `stem`.svg and `stem`.png: a bar per case with stage times, each stage's share of
/// the step stacked (shares, so that a 3 us step and a 450 us one both read; the label gives
/// the step's microseconds); the files written.
pub fn stages_per_case(reports: &[BenchReport], stem: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let names = fum_engine::Stage::ALL.map(fum_engine::Stage::name);
    let bars: Vec<Stages> = reports
        .iter()
        .flat_map(|r| &r.cases)
        .filter_map(|c| {
            let times = c.stage_us_per_step.as_ref()?;
            let us: Vec<f64> = names.iter().map(|n| times.get(*n).copied().unwrap_or(0.0)).collect();
            let total: f64 = us.iter().sum();
            Some((format!("{} ({}, {}T): {total:.1} us", c.name, c.backend, c.threads), us.iter().map(|t| 100.0 * t / total.max(1e-12)).collect()))
        })
        .collect();
    anyhow::ensure!(!bars.is_empty(), "no stage times to plot");
    register_font();
    let (svg, png) = (stem.with_extension("svg"), stem.with_extension("png"));
    let width = 260 + 230 * bars.len() as u32;
    draw_stages(SVGBackend::new(&svg, (width.max(700), 600)).into_drawing_area(), &bars, &names)?;
    draw_stages(BitMapBackend::new(&png, (width.max(700), 600)).into_drawing_area(), &bars, &names)?;
    Ok(vec![svg, png])
}

fn draw_stages<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, bars: &[Stages], names: &[&str]) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the plot: {e}");
    let mut chart = frame(&area, "fum: where a step's time goes")?
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..100.0)
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("share of the step (%)")
        .label_style(("sans-serif", 13))
        .x_labels(bars.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map_or(String::new(), |b| b.0.clone()),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| failed(&e))?;
    for (s, name) in names.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        let stacked = bars.iter().enumerate().map(|(i, (_, t))| {
            let below: f64 = t[..s].iter().sum();
            let mut bar = Rectangle::new([(SegmentValue::Exact(i), below), (SegmentValue::Exact(i + 1), below + t[s])], color.filled());
            bar.set_margin(0, 0, 20, 20);
            bar
        });
        chart
            .draw_series(stacked)
            .map_err(|e| failed(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(&e))?;
    area.present().map_err(|e| failed(&e))?;
    Ok(())
}

/// Every plot's white page, title, margin and label areas.
fn frame<'a, DB: DrawingBackend>(area: &'a DrawingArea<DB, Shift>, caption: &str) -> anyhow::Result<ChartBuilder<'a, 'a, DB>>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    let mut builder = ChartBuilder::on(area);
    builder.caption(caption, ("sans-serif", 26)).margin(20).x_label_area_size(50).y_label_area_size(70);
    Ok(builder)
}

/// Whole decades around the data, so that a log axis has its powers of ten to label.
fn decade_below(x: f64) -> f64 {
    10f64.powf(x.log10().floor())
}

fn decade_above(x: f64) -> f64 {
    let d = 10f64.powf(x.log10().ceil());
    if d > x { d } else { d * 10.0 }
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, series: &BTreeMap<String, Vec<Point>>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || series.values().flatten();
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y0, y1) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.2), hi.max(p.3)));
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the plot: {e}");
    let mut chart = frame(&area, "fum: real-time factor against network size")?
        .build_cartesian_2d((decade_below(x0)..decade_above(x1)).log_scale(), (decade_below(y0)..decade_above(y1)).log_scale())
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc("neurons (1000 synapses each)")
        .y_desc("wall time / biological time")
        .label_style(("sans-serif", 16))
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| failed(&e))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled()))).map_err(|e| failed(&e))?;
        // The repeats' range, as a bar through each point.
        chart.draw_series(points.iter().map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color))).map_err(|e| failed(&e))?;
    }
    chart.configure_series_labels().label_font(("sans-serif", 16)).background_style(WHITE.mix(0.9)).border_style(BLACK).draw().map_err(|e| failed(&e))?;
    area.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{CaseResult, sample_case, sample_report as report};

    /// A 200 ms case whose real-time factor is `rtf`.
    fn case(name: &str, backend: &str, neurons: u64, rtf: f64) -> CaseResult {
        sample_case(name, backend, 200.0, 2, neurons, rtf * 0.2)
    }

    #[test]
    fn a_series_per_backend_in_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = report(vec![case("scaling_2500", "cpu", 2500, 3.0), case("scaling_5000", "cpu", 5000, 5.5), case("brunel", "cpu", 12500, 3.5)]);
        let gpu = report(vec![case("scaling_100000", "cuda", 100_000, 0.4), case("scaling_1000000", "cuda", 1_000_000, 2.0)]);
        let files = rtf_against_size(&[cpu, gpu], &dir.path().join("rtf")).unwrap();
        assert_eq!(files, [dir.path().join("rtf.svg"), dir.path().join("rtf.png")]);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in ["real-time factor against network size", "cpu, cpu device", "cuda, cuda device", "neurons (1000 synapses each)"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(!svg.contains("brunel"), "only scaling cases are plotted");
        let png = std::fs::read(&files[1]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000, "a drawn image, not a blank one");
    }

    #[test]
    fn stage_bars_name_every_case_and_stage() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = case("brunel", "cpu", 12500, 3.5);
        a.stage_us_per_step = Some([("update", 40.0), ("deliver", 25.0), ("input", 5.0)].map(|(k, v)| (k.to_string(), v)).into_iter().collect());
        let mut b = case("vogels_abbott_cuba", "cpu", 4000, 0.1);
        b.stage_us_per_step = Some([("update", 4.0), ("record", 1.0)].map(|(k, v)| (k.to_string(), v)).into_iter().collect());
        let untimed = case("brunel", "cuda", 12500, 0.3);
        let files = stages_per_case(&[report(vec![a, b, untimed])], &dir.path().join("stages")).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in ["where a step", "brunel (cpu, 2T): 70.0 us", "vogels_abbott_cuba (cpu, 2T): 5.0 us", "share of the step"].into_iter().chain(fum_engine::Stage::ALL.map(fum_engine::Stage::name)) {
            assert!(svg.contains(text), "{text}");
        }
        assert_eq!(svg.matches("brunel (").count(), 1, "a case without stage times has no bar");
        assert!(stages_per_case(&[report(vec![case("brunel", "cuda", 12500, 0.3)])], &dir.path().join("none")).is_err());
    }

    #[test]
    fn results_without_scaling_cases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = rtf_against_size(&[report(vec![case("brunel", "cpu", 12500, 3.5)])], &dir.path().join("rtf")).unwrap_err();
        assert!(e.to_string().contains("no scaling cases"), "{e}");
    }
}
