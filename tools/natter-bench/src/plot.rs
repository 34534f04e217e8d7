//! SVG plots with plotters: latency CDFs, and latency against offered rate.

use std::path::Path;

use plotters::prelude::*;

/// The same colour for a system in every plot.
fn colour(system: &str) -> RGBColor {
    match system {
        "natter" => RGBColor(31, 119, 180),
        "relay" => RGBColor(90, 90, 90),
        "centrifugo" => RGBColor(255, 127, 14),
        "ejabberd" => RGBColor(44, 160, 44),
        _ => RGBColor(214, 39, 40),
    }
}

/// Latency CDFs, one curve per system, from sorted microsecond samples. The x axis is
/// logarithmic so the tail shows.
pub fn cdf(path: &Path, title: &str, series: &[(&str, &[u64])]) -> anyhow::Result<()> {
    let series: Vec<_> = series.iter().filter(|(_, s)| !s.is_empty()).collect();
    anyhow::ensure!(!series.is_empty(), "nothing to plot for {title}");
    let lo = series
        .iter()
        .map(|(_, s)| s[0].max(1) as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .map(|(_, s)| s[s.len() - 1].max(1) as f64 / 1000.0)
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(8)
        .x_label_formatter(&|x| number(*x))
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of messages")
        .draw()?;
    for (name, samples) in series {
        let n = samples.len();
        let points = (0..=400).map(|k| {
            let i = ((n - 1) * k) / 400;
            (samples[i].max(1) as f64 / 1000.0, (i + 1) as f64 / n as f64)
        });
        let c = colour(name);
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One system's latency percentiles at each offered rate.
pub struct RateCurve<'a> {
    pub system: &'a str,
    /// (offered rate, p50 ms, p99 ms)
    pub points: Vec<(f64, f64, f64)>,
}

/// p99 (solid) and p50 (thin) latency against offered rate, both axes logarithmic.
pub fn versus_rate(
    path: &Path,
    title: &str,
    rate_label: &str,
    curves: &[RateCurve<'_>],
) -> anyhow::Result<()> {
    let all: Vec<(f64, f64, f64)> = curves
        .iter()
        .flat_map(|c| c.points.iter().copied())
        .filter(|(_, p50, p99)| p50.is_finite() && p99.is_finite())
        .collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot for {title}");
    let (x_lo, x_hi) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (y_lo, y_hi) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.1.max(0.01)), hi.max(p.2))
    });
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (x_lo * 0.8..x_hi * 1.25).log_scale(),
            (y_lo * 0.8..y_hi * 1.25).log_scale(),
        )?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(6)
        .y_labels(8)
        .x_label_formatter(&|x| number(*x))
        .y_label_formatter(&|y| number(*y))
        .x_desc(rate_label)
        .y_desc("latency (ms): p99 solid, p50 thin")
        .draw()?;
    for curve in curves {
        let c = colour(curve.system);
        let points: Vec<_> = curve
            .points
            .iter()
            .copied()
            .filter(|(_, p50, p99)| p50.is_finite() && p99.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.2)),
                c.stroke_width(2),
            ))?
            .label(curve.system)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, p.2), 3, c.filled())),
        )?;
        chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1)),
            c.stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// An axis label: no decimals from 10 up, enough below to tell ticks apart.
fn number(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of an SVG's `<text>` elements.
    fn labels(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>'))
            .filter_map(|(_, rest)| rest.split_once("</text>"))
            .map(|(text, _)| text.trim())
            .collect()
    }

    #[test]
    fn plots_name_every_system() {
        let dir = tempfile::tempdir().unwrap();
        let cdf_path = dir.path().join("cdf.svg");
        let natter: Vec<u64> = (1..=1000).collect();
        let peer: Vec<u64> = (1..=1000).map(|v| v * 3).collect();
        cdf(&cdf_path, "t", &[("natter", &natter), ("ejabberd", &peer)]).unwrap();
        let svg = std::fs::read_to_string(&cdf_path).unwrap();
        assert!(labels(&svg).contains(&"natter") && labels(&svg).contains(&"ejabberd"));

        let rate_path = dir.path().join("rate.svg");
        let curves = [
            RateCurve {
                system: "natter",
                points: vec![(500.0, 0.6, 1.3), (1000.0, 0.7, 1.5)],
            },
            RateCurve {
                system: "centrifugo",
                points: vec![(500.0, 1.4, 3.7), (1000.0, f64::NAN, f64::NAN)],
            },
        ];
        versus_rate(&rate_path, "t", "rate", &curves).unwrap();
        let svg = std::fs::read_to_string(&rate_path).unwrap();
        assert!(labels(&svg).contains(&"centrifugo"));
    }

    #[test]
    fn nothing_to_plot_is_an_error_not_an_empty_picture() {
        let dir = tempfile::tempdir().unwrap();
        assert!(cdf(&dir.path().join("x.svg"), "t", &[("natter", &[])]).is_err());
    }
}
