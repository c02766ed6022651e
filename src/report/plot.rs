//! Line and scatter plots as PNG and SVG with plotters. PNG text uses a system TrueType font
//! (DejaVu Sans from Debian's `fonts-dejavu-core`, or the path in `MNV4_FONT`).

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// The font files tried for plot text, in order: `MNV4_FONT` (when set), then DejaVu Sans paths.
pub fn font_candidates() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::env::var_os("MNV4_FONT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    paths.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
    paths
}

/// Registers a font for plotters' text once; errors say how to get one.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let paths = font_candidates();
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let Some(bytes) = paths.iter().find_map(|p| std::fs::read(p).ok()) else {
            return Err("no TrueType font found for plot text: install Debian's fonts-dejavu-core or set MNV4_FONT to a .ttf file".into());
        };
        if plotters::style::register_font("sans-serif", FontStyle::Normal, BYTES.get_or_init(|| bytes)).is_ok() {
            return Ok(());
        }
        Err("the plot font could not be read as TrueType: set MNV4_FONT to a .ttf file".into())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A named series of (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Draw connecting lines (else markers only).
    pub line: bool,
    /// Marker radius in pixels (0 = none).
    pub marker: u32,
}

/// What to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    /// Text labels placed at points (e.g. preset names on a Pareto plot).
    pub annotations: Vec<(f64, f64, String)>,
    pub log_x: bool,
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9 + hi.abs() * 0.01);
    (lo - pad, hi + pad)
}

/// The corner for the legend: the one whose box (the outer 45 % of the width, 35 % of the
/// height) covers the fewest points, so it hides as little as it can; lower left on a tie.
fn legend_corner(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let (fx, fy) = (
        |v: f64| (v - x.0) / (x.1 - x.0),
        |v: f64| (v - y.0) / (y.1 - y.0),
    );
    let corners = [
        (SeriesLabelPosition::LowerLeft, false, false),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::UpperRight, true, true),
    ];
    let covered = |right: bool, upper: bool| {
        let inside = |&&(px, py): &&(f64, f64)| {
            let (u, v) = (fx(px), fy(py));
            (if right { u > 0.55 } else { u < 0.45 }) && (if upper { v > 0.65 } else { v < 0.35 })
        };
        points.iter().filter(inside).count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, upper)| covered(right, upper))
        .map_or(SeriesLabelPosition::LowerLeft, |c| c.0)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pts = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, mut x1) = bounds(pts().map(|p| p.0));
    if !chart.annotations.is_empty() {
        x1 += 0.18 * (x1 - x0); // room for the labels right of their points
    }
    let (y0, y1) = bounds(pts().map(|p| p.1));
    let mut marks: Vec<(f64, f64)> = pts().copied().collect();
    marks.extend(chart.annotations.iter().map(|a| (a.0, a.1)));
    let corner = legend_corner(&marks, (x0, x1), (y0, y1));
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70);
    macro_rules! body {
        ($c:expr) => {{
            let mut c = $c;
            c.configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .label_style(("sans-serif", 15))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for s in chart.series.iter().filter(|s| !s.points.is_empty()) {
                let color = s.color;
                if s.line && s.points.len() > 1 {
                    c.draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
                if s.marker > 0 {
                    let r = s.marker as i32;
                    let ann = c
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, r, color.filled())))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    if !s.line {
                        ann.label(s.label.clone())
                            .legend(move |(x, y)| Circle::new((x + 9, y), r, color.filled()));
                    }
                }
            }
            for (x, y, text) in &chart.annotations {
                c.draw_series(std::iter::once(Text::new(
                    text.clone(),
                    (*x, *y),
                    ("sans-serif", 14),
                )))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(corner)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }};
    }
    if chart.log_x {
        let lo = x0.max(1e-12);
        body!(builder
            .build_cartesian_2d((lo..x1).log_scale(), y0..y1)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?);
    } else {
        body!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `{stem}.png` (1200×800) and `{stem}.svg` in `dir`.
pub fn write_png_svg(chart: &Chart, dir: &Path, stem: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if chart.series.iter().all(|s| s.points.is_empty()) {
        bail!("plot '{}' has no points", chart.title);
    }
    ensure_font()?;
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        SVGBackend::new(&svg, (1200, 800)).into_drawing_area(),
        chart,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    let png = dir.join(format!("{stem}.png"));
    draw(
        BitMapBackend::new(&png, (1200, 800)).into_drawing_area(),
        chart,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let (x, y) = ((0.0, 10.0), (0.0, 10.0));
        let lower_left = [(1.0, 1.0), (2.0, 2.0), (9.0, 9.0)];
        let c = legend_corner(&lower_left, x, y);
        assert!(matches!(c, SeriesLabelPosition::LowerRight), "{c:?}");
        let all_but_upper_left = [(1.0, 1.0), (9.0, 1.0), (9.0, 9.0)];
        let c = legend_corner(&all_but_upper_left, x, y);
        assert!(matches!(c, SeriesLabelPosition::UpperLeft), "{c:?}");
        let c = legend_corner(&[], x, y);
        assert!(matches!(c, SeriesLabelPosition::LowerLeft), "{c:?}");
    }
}
