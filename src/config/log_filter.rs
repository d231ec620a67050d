//! `log_level` (and `--log-level`, `RUST_LOG`): one level for everything, or a list in the
//! form `RUST_LOG` users know, `info,proxy::node::link=debug,quinn=warn`: a bare level is
//! the default, `target=level` sets the level of a module path and everything under it.
//!
//! Only levels by module path are taken (no span or field filters, no regular
//! expressions): that is what operators write, and it keeps the filter a prefix match
//! that costs nothing per event (`tracing_subscriber::filter::Targets`).

use std::fmt;
use std::str::FromStr;

use super::LogLevel;

/// A default level and per-module levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// The level of every module not named in `targets`.
    pub level: LogLevel,
    /// `(module path, level)`, in the order written; a longer path wins over a shorter one.
    pub targets: Vec<(String, LogLevel)>,
}

impl From<LogLevel> for LogFilter {
    fn from(level: LogLevel) -> Self {
        LogFilter { level, targets: Vec::new() }
    }
}

/// Most `target=level` entries in one filter: far more than anyone writes by hand.
const MAX_TARGETS: usize = 64;
/// Longest module path taken.
const MAX_TARGET_LEN: usize = 128;

impl FromStr for LogFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut level = None;
        let mut targets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                None => {
                    if level.is_some() {
                        return Err(format!(
                            "`{item}`: a second default level (give one, plus `module=level` pairs)"
                        ));
                    }
                    level = Some(parse_level(item)?);
                }
                Some((target, target_level)) => {
                    let target = target.trim();
                    if !is_module_path(target) {
                        return Err(format!(
                            "`{item}`: `{target}` is not a module path (like `proxy::node` or `quinn`)"
                        ));
                    }
                    targets.push((target.to_string(), parse_level(target_level.trim())?));
                }
            }
        }
        if level.is_none() && targets.is_empty() {
            return Err("is empty (expected a level such as `info`, or `info,quinn=warn`)".into());
        }
        if targets.len() > MAX_TARGETS {
            return Err(format!("names {} modules; at most {MAX_TARGETS}", targets.len()));
        }
        Ok(LogFilter { level: level.unwrap_or(LogLevel::Info), targets })
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level.name())?;
        for (target, level) in &self.targets {
            write!(f, ",{target}={}", level.name())?;
        }
        Ok(())
    }
}

impl LogLevel {
    /// The level as written in a config.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }
}

fn parse_level(level: &str) -> Result<LogLevel, String> {
    match level.to_ascii_lowercase().as_str() {
        "off" => Ok(LogLevel::Off),
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        "fatal" => Ok(LogLevel::Fatal),
        _ => Err(format!(
            "unknown log level `{level}` (expected trace, debug, info, warn, error, fatal or off)"
        )),
    }
}

/// Rust module path segments joined by `::` (crate names may carry `-`, as targets do).
fn is_module_path(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= MAX_TARGET_LEN
        && target.split("::").all(|segment| {
            !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_alone_or_with_modules_parses_and_prints_back() {
        let f: LogFilter = "debug".parse().expect("level");
        assert_eq!(f, LogFilter::from(LogLevel::Debug));
        let f: LogFilter = " info , proxy::node::link=debug,quinn=WARN ".parse().expect("list");
        assert_eq!(f.level, LogLevel::Info);
        assert_eq!(
            f.targets,
            [("proxy::node::link".to_string(), LogLevel::Debug), ("quinn".to_string(), LogLevel::Warn)]
        );
        assert_eq!(f.to_string(), "info,proxy::node::link=debug,quinn=warn");
        let f: LogFilter = "proxy=trace".parse().expect("no default");
        assert_eq!((f.level, f.to_string().as_str()), (LogLevel::Info, "info,proxy=trace"));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let error = |text: &str| text.parse::<LogFilter>().expect_err(text);
        assert!(error("loud").contains("unknown log level `loud`"));
        assert!(error("info,debug").contains("second default level"));
        assert!(error("proxy node=debug").contains("not a module path"));
        assert!(error("proxy::=debug").contains("not a module path"));
        assert!(error("=debug").contains("not a module path"));
        assert!(error("quinn=").contains("unknown log level ``"));
        assert!(error(" , ").contains("is empty"));
        let many = (0..65).map(|i| format!("m{i}=debug")).collect::<Vec<_>>().join(",");
        assert!(error(&many).contains("at most 64"));
    }
}
