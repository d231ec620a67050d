//! What to run, from environment variables, so that a quick run is one command away.

use std::time::Duration;

use anyhow::{Context, Result};
use proxy::config::Congestion;

/// The sections of the benchmark, in the order they run.
pub const SECTIONS: [&str; 8] =
    ["ceiling", "grid", "cold", "relay", "fair", "multipath", "stalled", "newflow"];

/// A rate in the grid: a fixed figure, or the top rate picked from the measured ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridRate {
    /// Mbit/s.
    Fixed(u64),
    /// The top rate (see `ceiling::top_rate`).
    Top,
}

/// Everything the environment chooses.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `WAN_CASES`: sections to run (default all).
    pub sections: Vec<String>,
    /// `WAN_RTTS`: grid round trips in ms (default 20,80,200).
    pub rtts_ms: Vec<u64>,
    /// `WAN_LOSSES`: grid random loss in percent (default 0,0.1,1).
    pub losses_pct: Vec<f64>,
    /// `WAN_RATES`: grid rates in Mbit/s, `top` for the top rate (default 100,top).
    pub rates: Vec<GridRate>,
    /// `WAN_MIB`: a fixed transfer size instead of max(16 MiB, `WAN_SECS` at link rate).
    pub mib: Option<u64>,
    /// `WAN_SECS`: seconds at link rate a bulk transfer lasts at best (default 3).
    pub secs_at_rate: f64,
    /// `WAN_TIMEOUT`: seconds after which a transfer is cut and reported as a timeout,
    /// with the rate it reached until then (default 12).
    pub timeout: Duration,
    /// `WAN_TOP`: the top rate in Mbit/s, instead of deriving it from the ceiling.
    pub top: Option<u64>,
    /// `WAN_MESH_CC`: `mesh.congestion` values to run the mesh with (default: the node's
    /// default, filled in by `Ctx::new`).
    pub mesh_cc: Vec<String>,
    /// `WAN_MESH_EXTRA`: more `mesh:` keys for every node, e.g. `stream_window: 16777216`.
    pub mesh_extra: String,
    /// `WAN_BARE`: `mesh.congestion` names of the controllers bare quinn runs with, besides
    /// the fixed-window ceiling, which always runs (default cubic,bbr).
    pub bare: Vec<String>,
    /// `WAN_BUFFER_BDP`: bottleneck buffer in bandwidth-delay products (default 1).
    pub buffer_bdp: f64,
    /// `WAN_FAIR_SECS`: length of the fairness run (default 20).
    pub fair_secs: u64,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn list(name: &str, default: &str) -> Vec<String> {
    var(name)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parsed<T: std::str::FromStr>(name: &str, items: Vec<String>) -> Result<Vec<T>> {
    items.iter().map(|s| s.parse().ok().with_context(|| format!("{name}: cannot read {s:?}"))).collect()
}

fn one<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    var(name).map(|s| s.parse().ok().with_context(|| format!("{name}: cannot read {s:?}"))).transpose()
}

impl Opts {
    /// Reads the environment; an unreadable value is an error rather than a silent default.
    pub fn from_env() -> Result<Opts> {
        let sections = list("WAN_CASES", &SECTIONS.join(","));
        if let Some(bad) = sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
            anyhow::bail!("WAN_CASES: unknown section {bad:?} (known: {})", SECTIONS.join(","));
        }
        let rates = list("WAN_RATES", "100,top")
            .iter()
            .map(|r| match r.as_str() {
                "top" => Ok(GridRate::Top),
                n => n.parse().map(GridRate::Fixed).with_context(|| format!("WAN_RATES: {n:?}")),
            })
            .collect::<Result<_>>()?;
        let bare = list("WAN_BARE", "cubic,bbr");
        let mesh_cc = list("WAN_MESH_CC", "");
        for (name, values) in [("WAN_BARE", &bare), ("WAN_MESH_CC", &mesh_cc)] {
            if let Some(bad) = values.iter().find(|v| Congestion::from_name(v).is_none()) {
                anyhow::bail!("{name}: unknown controller {bad:?} (known: {})", Congestion::NAMES.join(", "));
            }
        }
        Ok(Opts {
            sections,
            rtts_ms: parsed("WAN_RTTS", list("WAN_RTTS", "20,80,200"))?,
            losses_pct: parsed("WAN_LOSSES", list("WAN_LOSSES", "0,0.1,1"))?,
            rates,
            mib: one("WAN_MIB")?,
            secs_at_rate: one("WAN_SECS")?.unwrap_or(3.0),
            timeout: Duration::from_secs_f64(one("WAN_TIMEOUT")?.unwrap_or(12.0)),
            top: one("WAN_TOP")?,
            mesh_cc,
            mesh_extra: var("WAN_MESH_EXTRA").unwrap_or_default(),
            bare,
            buffer_bdp: one("WAN_BUFFER_BDP")?.unwrap_or(1.0),
            fair_secs: one("WAN_FAIR_SECS")?.unwrap_or(20),
        })
    }

    /// Whether section `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    /// Bytes of a bulk transfer at `mbit`: long enough to leave slow start behind.
    pub fn bulk_len(&self, mbit: u64) -> u64 {
        const MIB: u64 = 1 << 20;
        if let Some(mib) = self.mib {
            return mib * MIB;
        }
        let at_rate = (mbit as f64 * 1e6 / 8.0 * self.secs_at_rate) as u64;
        at_rate.div_ceil(MIB).max(16) * MIB
    }

    /// The `mesh:` keys for a node run with congestion controller `cc` (`None`: default).
    pub fn mesh_keys(&self, cc: Option<&str>) -> String {
        let mut keys = vec!["keepalive_interval: \"1s\"".to_string()];
        if let Some(cc) = cc {
            keys.push(format!("congestion: {cc}"));
        }
        if !self.mesh_extra.is_empty() {
            keys.push(self.mesh_extra.clone());
        }
        keys.join(", ")
    }

    /// The mesh congestion controllers to run, each a `mesh.congestion` name.
    pub fn mesh_variants(&self) -> Vec<String> {
        self.mesh_cc.clone()
    }
}
