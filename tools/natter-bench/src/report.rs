//! How a scenario reports: a progress bar on stderr while it runs, one JSON line per
//! measurement on stdout with `--json`, a summary table at the end (Markdown, so it pastes
//! into docs/benchmarks.md), and SVG plots in the plots directory.

use std::fmt;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the figures go: `--json`, `--plots`, `--record`.
pub struct Output {
    pub json: bool,
    pub plots: PathBuf,
    pub record: Option<PathBuf>,
}

pub struct Report {
    json: bool,
    plots: PathBuf,
    bar: ProgressBar,
    /// `--record`: every measurement is also appended here as a JSON line.
    record: Option<std::sync::Mutex<std::fs::File>>,
}

impl Report {
    /// A report for a scenario of `steps` measured steps.
    pub fn new(out: &Output, steps: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&out.plots)?;
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        let record = match &out.record {
            Some(path) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            json: out.json,
            plots: out.plots.clone(),
            bar,
            record,
        })
    }

    /// Says what runs now.
    pub fn step(&self, what: impl Into<String>) {
        self.bar.set_message(what.into());
    }

    /// One step finished.
    pub fn done(&self) {
        self.bar.inc(1);
    }

    /// Adds steps found while running (a rate search learns how many it needs as it goes).
    pub fn more_steps(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// One measurement: a JSON line with `--json`, else a line above the progress bar.
    pub fn measurement(&self, value: serde_json::Value, text: String) {
        if let Some(file) = &self.record
            && let Ok(mut file) = file.lock()
        {
            use std::io::Write;
            let _ = writeln!(file, "{value}");
        }
        if self.json {
            self.bar.suspend(|| println!("{value}"));
        } else {
            self.bar.println(text);
        }
    }

    /// Where a plot named `name` goes.
    pub fn plot(&self, name: &str) -> PathBuf {
        self.plots.join(name)
    }

    /// Ends the progress bar and prints the summary tables (not with `--json`) and where the
    /// plots are.
    pub fn finish(self, tables: &[Table], plots: &[PathBuf]) {
        self.bar.finish_and_clear();
        if self.json {
            return;
        }
        for table in tables {
            println!("\n{table}");
        }
        for plot in plots {
            println!("plot: {}", plot.display());
        }
    }
}

/// A summary table.
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| {
            write!(f, "|")?;
            for (cell, w) in cells.iter().zip(&widths) {
                write!(f, " {cell:<w$} |")?;
            }
            writeln!(f)
        };
        writeln!(f, "{}", self.title)?;
        line(f, &self.headers)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// Milliseconds with two decimals, or "–" when there is nothing to show.
pub fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

/// natter's figure over a peer's, as "×2.50", or "–".
pub fn ratio(natter: f64, peer: f64) -> String {
    if natter.is_finite() && peer.is_finite() && peer > 0.0 {
        format!("×{:.2}", natter / peer)
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_by_characters() {
        let mut t = Table::new("title", &["system", "natter ÷ system"]);
        t.row(vec!["natter".into(), ratio(2.0, 1.0)]);
        t.row(vec!["centrifugo".into(), ratio(1.0, 0.0)]);
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "title");
        assert_eq!(lines[1], "| system     | natter ÷ system |");
        assert_eq!(lines[2], "| ---------- | --------------- |");
        assert_eq!(lines[3], "| natter     | ×2.00           |");
        assert_eq!(lines[4], "| centrifugo | –               |");
    }

    #[test]
    fn missing_figures_print_as_a_dash() {
        assert_eq!(ms(f64::NAN), "–");
        assert_eq!(ms(1.234), "1.23");
        assert_eq!(ratio(f64::NAN, 2.0), "–");
    }
}
