//! What one transfer measured, and tables printed a row at a time (so a long run shows
//! progress).

use std::time::Duration;

use crate::traffic::Timed;

/// One measured transfer.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it ended.
    pub t: Timed,
    /// Bytes the sender declared lost (and so sent again) during the transfer.
    pub resent: u64,
    /// UDP bytes the sender put on the wire during the transfer.
    pub wire: u64,
    /// Smoothed RTT samples taken during the transfer, ms.
    pub rtt_ms: Vec<f64>,
    /// The round trip the emulator adds, ms.
    pub base_rtt_ms: f64,
}

impl Run {
    /// Goodput in Mbit/s.
    pub fn mbit(&self) -> f64 {
        self.t.mbit()
    }

    /// Goodput, with `t/o` when the transfer was cut.
    pub fn rate_cell(&self) -> String {
        self.t.cell()
    }

    /// Resent MiB and as a share of the bytes on the wire.
    pub fn resent_cell(&self) -> String {
        let share = self.resent as f64 / self.wire.max(1) as f64;
        format!("{:.2} ({})", self.resent as f64 / 1048576.0, pct(share))
    }

    /// Mean and largest RTT above the configured one: the queue the flow built.
    pub fn queue_cell(&self) -> String {
        if self.rtt_ms.is_empty() {
            return "-".into();
        }
        let mean = self.rtt_ms.iter().sum::<f64>() / self.rtt_ms.len() as f64;
        let max = self.rtt_ms.iter().copied().fold(f64::MIN, f64::max);
        format!("{:.0} / {:.0}", (mean - self.base_rtt_ms).max(0.0), (max - self.base_rtt_ms).max(0.0))
    }
}

/// `0.123` as `12.3%`.
pub fn pct(x: f64) -> String {
    if x.is_finite() { format!("{:.1}%", x * 100.0) } else { "-".into() }
}

/// `a / b` as `0.87x`.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}x", a / b) } else { "-".into() }
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A table with fixed column widths, printed as rows come in.
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// Prints the header; each column is `(title, width)`.
    pub fn new(columns: &[(&str, usize)]) -> Table {
        let t = Table { widths: columns.iter().map(|c| c.1.max(c.0.len())).collect() };
        t.row(&columns.iter().map(|c| c.0.to_string()).collect::<Vec<_>>());
        let total = t.widths.iter().sum::<usize>() + 2 * t.widths.len();
        println!("  {}", "-".repeat(total));
        t
    }

    /// Prints one row: the first cell left-aligned, the rest right-aligned.
    pub fn row(&self, cells: &[String]) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&self.widths).enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(&format!("{cell:>w$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}
