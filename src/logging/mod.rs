//! Logging for the node and the scheduler: a filter (a level, or levels per module), standard
//! error or a file rotated by size ([`rotating_file`]), and text or JSON lines.
//!
//! The logger is built so that a running process can change all of it ([`LiveLog`]): the
//! filter and the output are each a reloadable layer, so a config reload (the node's, the
//! scheduler's `SIGHUP`) applies new `log_*` keys without a restart. A reload that opens a
//! new log file opens it before anything changes, so one that cannot is refused whole.

mod rotating_file;

use std::io::{self, IsTerminal};
use std::sync::{Arc, Mutex};

use tracing::Dispatch;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{Registry, reload};

use crate::config::{LogConfig, LogFilter, LogFormat, LogLevel};
pub(crate) use rotating_file::RotatingFile;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The log file could not be opened (or created) for append.
    #[error("cannot open `{}`: {source}", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A global logger was installed before; the process logs through that one.
    #[error("a global logger is already installed")]
    AlreadySet,
}

/// The registry under the filter: what the output layer sits on.
type Filtered = Layered<reload::Layer<Targets, Registry>, Registry>;
/// The output: a formatting layer (text or JSON) with its writer.
type Output = Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync>;

/// Where lines go. A file is shared by every output built on it, so a reload that keeps
/// the file settings keeps the one open file (two handles would rotate it twice).
#[derive(Clone)]
enum Sink {
    Stderr,
    File(Arc<RotatingFile>),
}

impl Sink {
    fn open(config: &LogConfig) -> Result<Sink, LogError> {
        match &config.file {
            Some(path) => RotatingFile::open(path, config.max_bytes, config.keep)
                .map(|f| Sink::File(Arc::new(f)))
                .map_err(|source| LogError::Open { path: path.clone(), source }),
            None => Ok(Sink::Stderr),
        }
    }

    /// The writer, and whether it is a terminal (only a terminal gets colours).
    fn writer(&self) -> (BoxMakeWriter, bool) {
        match self {
            Sink::Stderr => (BoxMakeWriter::new(io::stderr), io::stderr().is_terminal()),
            Sink::File(file) => (BoxMakeWriter::new(SharedFile(file.clone())), false),
        }
    }
}

/// A [`RotatingFile`] shared between outputs.
struct SharedFile(Arc<RotatingFile>);

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = <RotatingFile as MakeWriter<'a>>::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}

/// The formatting layer for `format`, writing to `sink`.
///
/// Text lines carry colours only on a terminal (and not when `NO_COLOR` is set); JSON
/// lines are objects with `timestamp`, `level`, `target`, `fields` (the event's, with
/// `message`), and, inside a span, `span` (the innermost span's name and fields, such as a
/// flow's `id`) and `spans` (every open span, outermost first).
fn output(format: LogFormat, sink: &Sink) -> Output {
    let (writer, terminal) = sink.writer();
    let colours = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_target(false).with_ansi(colours).boxed(),
        LogFormat::Json => layer.json().with_current_span(true).with_span_list(true).with_ansi(false).boxed(),
    }
}

/// The filter for `level`: its default, and its modules' own levels.
fn targets(filter: &LogFilter) -> Targets {
    filter.targets.iter().fold(Targets::new().with_default(level(filter.level)), |t, (target, l)| {
        t.with_target(target, level(*l))
    })
}

/// The most verbose level written for a config level; `fatal` has no tracing level of
/// its own and writes errors only.
fn level(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
        LogLevel::Off => LevelFilter::OFF,
    }
}

/// A process's logger that can be changed while it runs: built from a config's `log_*`
/// keys, with the filter from `--log-level` (or `RUST_LOG`) instead of `log_level` when
/// one was given.
///
/// The command line's filter holds until the file's `log_level` itself changes: an
/// operator who started a node with `--log-level debug` keeps it across reloads that
/// change other things, and one who edits `log_level` gets what they wrote.
pub(crate) struct LiveLog {
    filter: reload::Handle<Targets, Registry>,
    output: reload::Handle<Output, Filtered>,
    state: Mutex<Applied>,
}

/// What a [`LiveLog`] applies now.
struct Applied {
    /// The settings in force, the filter as applied.
    config: LogConfig,
    /// `log_level` as the config file said it last.
    file_level: LogFilter,
    sink: Sink,
}

/// A change worked out by [`LiveLog::prepare`] (a new file already open), applied by
/// [`LiveLog::apply`].
pub(crate) struct LogChange {
    config: LogConfig,
    file_level: LogFilter,
    /// The new sink, when the file settings changed.
    sink: Option<Sink>,
    /// What changes, for the reload's log line; empty when nothing does.
    pub(crate) summary: Vec<String>,
}

impl LiveLog {
    /// Builds the logger for `config` (the filter from `cli_filter` when given) without
    /// installing it.
    pub(crate) fn build(
        config: &LogConfig,
        cli_filter: Option<&LogFilter>,
    ) -> Result<(LiveLog, Dispatch), LogError> {
        let sink = Sink::open(config)?;
        let mut applied = config.clone();
        if let Some(filter) = cli_filter {
            applied.level = filter.clone();
        }
        let (filter_layer, filter) = reload::Layer::new(targets(&applied.level));
        let (output_layer, output_handle) = reload::Layer::new(output(applied.format, &sink));
        let dispatch = Dispatch::new(Registry::default().with(filter_layer).with(output_layer));
        let state = Mutex::new(Applied { config: applied, file_level: config.level.clone(), sink });
        Ok((LiveLog { filter, output: output_handle, state }, dispatch))
    }

    /// Builds the logger and installs it for the whole process. Call once, before the
    /// runtime starts; a second call fails with [`LogError::AlreadySet`].
    pub(crate) fn install(config: &LogConfig, cli_filter: Option<&LogFilter>) -> Result<LiveLog, LogError> {
        let (live, dispatch) = LiveLog::build(config, cli_filter)?;
        tracing::dispatcher::set_global_default(dispatch).map_err(|_| LogError::AlreadySet)?;
        Ok(live)
    }

    /// Works out what `new` (a reloaded config's `log_*` keys) changes, opening a new log
    /// file if it names one; nothing is applied yet.
    pub(crate) fn prepare(&self, new: &LogConfig) -> Result<LogChange, LogError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let old = &state.config;
        let mut config = new.clone();
        let mut summary = Vec::new();
        if new.level == state.file_level {
            // The file's level did not change: whatever is in force (maybe the command
            // line's) stays.
            config.level = old.level.clone();
        } else if config.level != old.level {
            summary.push(format!("log_level {} -> {}", old.level, config.level));
        }
        if config.format != old.format {
            summary.push(format!("log_format {:?} -> {:?}", old.format, config.format).to_lowercase());
        }
        let file_changed =
            (&config.file, config.max_bytes, config.keep) != (&old.file, old.max_bytes, old.keep);
        let sink = if file_changed {
            let shown = |f: &Option<std::path::PathBuf>| {
                f.as_ref().map_or_else(|| "stderr".to_string(), |p| p.display().to_string())
            };
            summary.push(format!(
                "log_file {} -> {} (max {} bytes, keep {})",
                shown(&old.file),
                shown(&config.file),
                config.max_bytes,
                config.keep
            ));
            Some(Sink::open(&config)?)
        } else {
            None
        };
        Ok(LogChange { config, file_level: new.level.clone(), sink, summary })
    }

    /// Applies a prepared change. Lines logged from here on follow it.
    pub(crate) fn apply(&self, change: LogChange) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Only a logger whose subscriber is gone refuses a reload; nothing logs then.
        if change.config.level != state.config.level {
            let _ = self.filter.reload(targets(&change.config.level));
        }
        let sink_changed = change.sink.is_some();
        if let Some(sink) = change.sink {
            state.sink = sink;
        }
        if sink_changed || change.config.format != state.config.format {
            let _ = self.output.reload(output(change.config.format, &state.sink));
        }
        state.config = change.config;
        state.file_level = change.file_level;
    }

    /// The filter in force (`log_level`, or the command line's).
    #[cfg(test)]
    pub(crate) fn filter(&self) -> LogFilter {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).config.level.clone()
    }
}

/// Builds the logger described by `config` without installing it (tests install one for a
/// scope with [`tracing::dispatcher::with_default`]).
#[cfg(test)]
pub(crate) fn dispatch(config: &LogConfig) -> Result<Dispatch, LogError> {
    LiveLog::build(config, None).map(|(_, dispatch)| dispatch)
}

/// Escapes and caps a string that came from the network before it is logged.
pub(crate) fn log_escape(s: &str) -> String {
    const CAP: usize = 256;
    let mut out: String = s.chars().take(CAP).flat_map(char::escape_debug).collect();
    if s.chars().count() > CAP {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use super::*;

    /// A fresh directory for one test.
    pub(super) fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("proxy-logging-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    pub(super) fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    fn file_config(path: &Path, level: LogLevel, format: LogFormat) -> LogConfig {
        LogConfig { level: level.into(), file: Some(path.to_path_buf()), format, ..LogConfig::default() }
    }

    #[test]
    fn json_lines_carry_the_flow_span_fields() {
        let dir = temp("json");
        let path = dir.join("node.log");
        let dispatch = dispatch(&file_config(&path, LogLevel::Info, LogFormat::Json)).expect("logger");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(listener = "web", "listening");
            let span = tracing::info_span!("flow", id = 42u64, route = "web");
            let _entered = span.enter();
            tracing::warn!(reason = "no_route", "flow refused");
        });
        let text = read(&path);
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "listening");
        assert_eq!(lines[0]["fields"]["listener"], "web");
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["fields"]["reason"], "no_route");
        assert_eq!(lines[1]["span"]["name"], "flow");
        assert_eq!(lines[1]["span"]["id"], 42);
        assert_eq!(lines[1]["span"]["route"], "web");
        assert_eq!(lines[1]["spans"][0]["id"], 42);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn text_in_a_file_has_no_colours_and_honours_the_level() {
        let dir = temp("text");
        let path = dir.join("node.log");
        let dispatch = dispatch(&file_config(&path, LogLevel::Warn, LogFormat::Text)).expect("logger");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("not written");
            tracing::warn!(peer = "b", "link lost");
        });
        let text = read(&path);
        assert!(!text.contains('\u{1b}'), "ANSI escape in {text:?}");
        assert!(!text.contains("not written"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN") && text.contains("link lost") && text.contains("peer=\"b\""), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn fatal_writes_errors_only() {
        let dir = temp("fatal");
        let path = dir.join("node.log");
        let dispatch = dispatch(&file_config(&path, LogLevel::Fatal, LogFormat::Json)).expect("logger");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!("not written");
            tracing::error!("written");
        });
        let text = read(&path);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"written\""), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = temp("unopenable");
        let path = dir.join("missing-dir").join("node.log");
        let err = dispatch(&file_config(&path, LogLevel::Info, LogFormat::Text)).expect_err("refused");
        assert!(matches!(&err, LogError::Open { path: p, .. } if *p == path));
        assert!(err.to_string().contains("missing-dir"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reload_changes_the_level_format_and_file_of_a_running_logger() {
        let dir = temp("live");
        let (first, second) = (dir.join("first.log"), dir.join("second.log"));
        let config = file_config(&first, LogLevel::Info, LogFormat::Text);
        let (live, dispatch) = LiveLog::build(&config, None).expect("logger");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!("hidden at info");
            let debug =
                LogConfig { level: "info,proxy::logging=debug".parse().expect("filter"), ..config.clone() };
            let change = live.prepare(&debug).expect("prepared");
            assert_eq!(change.summary, ["log_level info -> info,proxy::logging=debug"]);
            live.apply(change);
            tracing::debug!("shown at debug");
            let json = LogConfig { format: LogFormat::Json, file: Some(second.clone()), ..debug.clone() };
            let change = live.prepare(&json).expect("prepared");
            assert_eq!(change.summary.len(), 2, "{:?}", change.summary);
            live.apply(change);
            tracing::debug!("as json");
        });
        let text = read(&first);
        assert!(!text.contains("hidden at info") && text.contains("shown at debug"), "{text}");
        let json: serde_json::Value = serde_json::from_str(read(&second).trim()).expect("a JSON line");
        assert_eq!(json["fields"]["message"], "as json");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_command_line_filter_holds_until_the_files_level_changes() {
        let dir = temp("override");
        let path = dir.join("node.log");
        let config = file_config(&path, LogLevel::Warn, LogFormat::Text);
        let debug: LogFilter = "debug".parse().expect("filter");
        let (live, dispatch) = LiveLog::build(&config, Some(&debug)).expect("logger");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!("one");
            // A reload that changes something else keeps `--log-level`.
            let change = live.prepare(&LogConfig { format: LogFormat::Json, ..config.clone() }).expect("ok");
            assert_eq!(change.summary, ["log_format text -> json"]);
            live.apply(change);
            assert_eq!(live.filter(), debug);
            tracing::debug!("two");
            // Editing `log_level` wins.
            let change =
                live.prepare(&LogConfig { level: LogLevel::Error.into(), ..config.clone() }).expect("ok");
            live.apply(change);
            tracing::warn!("three");
        });
        let text = read(&path);
        assert!(text.contains("one") && text.contains("two") && !text.contains("three"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_refuses_the_change_and_keeps_the_old_one() {
        let dir = temp("refused");
        let path = dir.join("node.log");
        let config = file_config(&path, LogLevel::Info, LogFormat::Text);
        let (live, dispatch) = LiveLog::build(&config, None).expect("logger");
        let bad = LogConfig { file: Some(dir.join("gone").join("x.log")), ..config.clone() };
        assert!(matches!(live.prepare(&bad), Err(LogError::Open { .. })));
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("still here"));
        assert!(read(&path).contains("still here"));
        let _ = fs::remove_dir_all(&dir);
    }
}
