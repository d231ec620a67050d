//! The logging keys, checked the same way for a node (`common.log_*`) and for the
//! scheduler (`log_*` at the top level).

use std::path::{Path, PathBuf};

use crate::config::{DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, LogConfig, LogFilter, LogFormat};

/// Smallest `log_max_bytes`: below this a busy node would rotate every few seconds.
const LOG_MAX_BYTES_MIN: u64 = 1 << 20;
/// Largest `log_max_bytes` (1 TiB): a file past this is no longer one an operator reads.
const LOG_MAX_BYTES_MAX: u64 = 1 << 40;
/// Largest `log_keep`: rotation renames every kept file, one by one.
const LOG_KEEP_MAX: u64 = 100;

/// The logging keys as written.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawLogKeys<'a> {
    /// `log_level`.
    pub(crate) level: Option<&'a str>,
    /// `log_file`.
    pub(crate) file: Option<&'a str>,
    /// `log_format`.
    pub(crate) format: Option<&'a str>,
    /// `log_max_bytes`.
    pub(crate) max_bytes: Option<u64>,
    /// `log_keep`.
    pub(crate) keep: Option<u64>,
}

/// Checks the logging keys, giving each problem to `report` with the key's own name
/// (`log_file`, ...; the caller adds the section). A relative `log_file` is resolved
/// against `base`, and its directory must exist: a node that cannot open its log file
/// refuses to start, and `proxy check` should say so first. Returns the settings when
/// every key passed.
pub(crate) fn check_log_keys(
    raw: RawLogKeys<'_>,
    base: &Path,
    report: &mut dyn FnMut(&'static str, String),
) -> Option<LogConfig> {
    let level = reported(report, "log_level", raw.level.unwrap_or("info").parse::<LogFilter>());
    let file = match raw.file {
        None => Some(None),
        Some(f) => reported(report, "log_file", check_log_file(f, base).map(Some)),
    };
    let format = reported(report, "log_format", parse_log_format(raw.format.unwrap_or("text")));
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES);
    let max_bytes = reported(
        report,
        "log_max_bytes",
        in_range(
            max_bytes,
            LOG_MAX_BYTES_MIN..=LOG_MAX_BYTES_MAX,
            "1048576 (1 MiB) to 1099511627776 (1 TiB)",
        ),
    );
    let keep = raw.keep.unwrap_or(u64::from(DEFAULT_LOG_KEEP));
    let keep = in_range(keep, 1..=LOG_KEEP_MAX, &format!("1 to {LOG_KEEP_MAX}"))
        .and_then(|k| u32::try_from(k).map_err(|_| format!("is {k}; must be 1 to {LOG_KEEP_MAX}")));
    let keep = reported(report, "log_keep", keep);
    Some(LogConfig { level: level?, file: file?, format: format?, max_bytes: max_bytes?, keep: keep? })
}

/// The value when `result` passed; else gives its message to `report` under `key`.
fn reported<T>(
    report: &mut dyn FnMut(&'static str, String),
    key: &'static str,
    result: Result<T, String>,
) -> Option<T> {
    result.map_err(|message| report(key, message)).ok()
}

fn parse_log_format(format: &str) -> Result<LogFormat, String> {
    match format {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format `{other}` (expected text or json)")),
    }
}

/// A log file path: not blank, not a directory, in a directory that exists.
fn check_log_file(file: &str, base: &Path) -> Result<PathBuf, String> {
    if file.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let path = base.join(file);
    if path.is_dir() {
        return Err(format!("`{}` is a directory; name a file in it", path.display()));
    }
    // `Path::new("a.log").parent()` is the empty path, which means the current directory.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "directory `{}` does not exist (the log file is created, its directory is not)",
            dir.display()
        ));
    }
    Ok(path)
}

/// `value` when it is in `range`; else says so, with the range as an operator reads it.
fn in_range(value: u64, range: std::ops::RangeInclusive<u64>, readable: &str) -> Result<u64, String> {
    if range.contains(&value) { Ok(value) } else { Err(format!("is {value}; must be {readable}")) }
}
