//! The command line: `run`, `check`, `status`, `scheduler`, `mesh init`. Exit codes: 0 success, 2 bad usage or
//! bad config, 1 runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, LogConfig};
use crate::node::Node;

/// `proxy`: an overlay mesh for TCP over QUIC.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about)]
pub struct Cli {
    /// Node config file (same as `proxy run -c FILE`).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// What to do; without one, run a node from `-c FILE` or `config.yaml`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Run {
        /// Node config file.
        #[arg(short = 'c', long = "config", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Run the scheduler.
    Scheduler {
        /// Scheduler config file.
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
    },
    /// Validate a node or scheduler config and print every problem with its key and line.
    Check {
        /// Node config file.
        #[arg(short = 'c', long = "config", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Show a running node's peers, listeners, routes and busiest flows; with
    /// `--scheduler`, a scheduler's nodes, links and routes.
    Status {
        /// The node's admin address (`common.admin_addr`).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Ask the scheduler whose admin API is at ADDR (its `admin_addr`, e.g.
        /// 127.0.0.1:9900) instead of a node.
        #[arg(long, value_name = "ADDR", conflicts_with = "admin")]
        scheduler: Option<String>,
        /// The admin token, when the node or scheduler requires one (else `PROXY_ADMIN_TOKEN`).
        #[arg(long)]
        token: Option<String>,
    },
    /// Make and manage a mesh.
    Mesh {
        /// The mesh subcommand.
        #[command(subcommand)]
        command: MeshCommand,
    },
}

/// `proxy mesh ...`
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Make a mesh CA and a certificate and key per node.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated node ids to make certificates for, e.g. `a,b,c`.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run { config }) => run(&config),
        Some(Command::Check { config }) => check(&config),
        Some(Command::Scheduler { config }) => run_scheduler(&config),
        Some(Command::Status { admin, scheduler, token }) => status(&admin, scheduler.as_deref(), token),
        Some(Command::Mesh { command: MeshCommand::Init { dir, nodes } }) => mesh_init(&dir, &nodes),
        None => run(cli.config.as_deref().unwrap_or(Path::new("config.yaml"))),
    }
}

fn status(admin: &str, scheduler: Option<&str>, token: Option<String>) -> ExitCode {
    let token = token.or_else(|| std::env::var("PROXY_ADMIN_TOKEN").ok());
    let runtime = match start_runtime(false, "proxy status") {
        Ok(r) => r,
        Err(code) => return code,
    };
    use crate::admin::status;
    let page = match scheduler {
        Some(addr) => runtime
            .block_on(status::fetch_scheduler(addr, token.as_deref()))
            .map(|input| status::render_scheduler(&input)),
        None => runtime.block_on(status::fetch(admin, token.as_deref())).map(|input| status::render(&input)),
    };
    match page {
        Ok(page) => {
            print!("{page}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("proxy status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    if std::fs::read_to_string(path).is_ok_and(|t| config::is_scheduler_config(&t)) {
        return match config::scheduler::load(path) {
            Ok(c) => {
                println!("{}: ok (scheduler on {}, {} pins)", path.display(), c.bind, c.pins.len());
                ExitCode::SUCCESS
            }
            Err(errors) => config_refused(&errors, &format!("{}", path.display())),
        };
    }
    match config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok (node `{}`, {} listeners, {} peers, {} routes)",
                path.display(),
                c.common.node_id,
                c.listeners.len(),
                c.peers.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => config_refused(&errors, &format!("{}", path.display())),
    }
}

/// Prints every problem of a config, then `what` with the count; exit code 2.
fn config_refused(errors: &config::ConfigErrors, what: &str) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("{what}: {} problem(s)", errors.errors.len());
    ExitCode::from(2)
}

fn mesh_init(dir: &Path, nodes: &[String]) -> ExitCode {
    match crate::pki::init_mesh(dir, nodes) {
        Ok(written) => {
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            println!("private keys (*.key) are mode 0600; keep them off version control");
            ExitCode::SUCCESS
        }
        Err(e @ (crate::pki::PkiError::InvalidNodeId(_) | crate::pki::PkiError::Exists(_))) => {
            eprintln!("proxy mesh init: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("proxy mesh init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return config_refused(&errors, &format!("proxy: refusing to start {}", path.display()));
        }
    };
    if let Err(code) = start_logging(&config.common.log, "common.log_file") {
        return code;
    }
    let runtime = match start_runtime(true, "proxy") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run_node(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_scheduler(path: &Path) -> ExitCode {
    let config = match config::scheduler::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return config_refused(&errors, &format!("proxy: refusing to start {}", path.display()));
        }
    };
    if let Err(code) = start_logging(&config.log, "log_file") {
        return code;
    }
    let runtime = match start_runtime(true, "proxy") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let run = async {
        let scheduler = crate::scheduler::Scheduler::start(config).await?;
        wait_for_signal().await?;
        drop(scheduler);
        anyhow::Ok(())
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How often the config file is checked for changes.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_node(config: Config, path: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let node = Node::start(config).await?;
    for l in node.listeners() {
        tracing::info!(listener = %l.name, addr = %l.addr, "listening");
    }
    let (mut term, mut int, mut hup) =
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?);
    // A change is applied once the file has looked the same for a whole poll, so a file
    // being written (a copy, an editor's save) is not read half done.
    let stamp = || std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()));
    let mut seen = stamp();
    let mut settling = None;
    let mut poll = tokio::time::interval(CONFIG_POLL);
    loop {
        let why = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => {
                let now = stamp();
                if now == seen {
                    settling = None;
                    continue;
                }
                if settling != Some(now) {
                    settling = Some(now);
                    continue;
                }
                seen = now;
                settling = None;
                "config file changed"
            }
        };
        match node.reload_file(path) {
            Ok(report) => {
                tracing::info!(version = report.version, changes = %report.summary, "{why}: config applied")
            }
            Err(e) => tracing::error!("{why}: config refused, the running one stays: {e}"),
        }
    }
    let report = node.shutdown().await;
    tracing::info!(open = report.open_at_start, reset = report.reset_at_deadline, "shutdown complete");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    Ok(())
}

/// Installs the logger; a log file that cannot be opened is a config problem (exit 2),
/// reported under `key`.
fn start_logging(log: &LogConfig, key: &str) -> Result<(), ExitCode> {
    match crate::logging::init(log) {
        Ok(()) => Ok(()),
        Err(e @ crate::logging::LogError::Open { .. }) => {
            eprintln!("proxy: {key}: {e}");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("proxy: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// A tokio runtime (multi-threaded, or one thread for short client work); on failure the
/// error is printed under `who` and the exit code returned.
fn start_runtime(multi_thread: bool, who: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("{who}: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}
