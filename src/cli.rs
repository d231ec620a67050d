//! The command line: `run`, `check`, `status`, `ping`, `trace`, `scheduler`, `demo`, `mesh`
//! (`init`, `token create|list|revoke`, `join`, `nodes`, `remove`), `completions` and `man`.
//! Exit codes: 0 success, 2 bad usage or bad config,
//! 1 runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, LogConfig, LogFilter};
use crate::logging::LiveLog;
use crate::node::Node;

mod mesh_admin;
mod probe;

/// The version `--version` prints: the package's, the git commit and its date (build.rs).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("PROXY_GIT_COMMIT"), " ", env!("PROXY_BUILD_DATE"), ")");

/// `proxy`: an overlay mesh for TCP over QUIC.
#[derive(Debug, Parser)]
#[command(name = "proxy", version = VERSION, about)]
pub struct Cli {
    /// Node config file (same as `proxy run -c FILE`).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Log filter for `run`, `scheduler` and `demo`, in place of the config's `log_level`:
    /// a level (trace, debug, info, warn, error, fatal), or a level and per-module levels,
    /// e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file's
    /// own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it
    /// parses (else it is ignored with a warning).
    #[arg(long, global = true, value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<LogFilter>,
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
        /// A file holding the admin token, when the node or scheduler requires one (wins
        /// over `PROXY_ADMIN_TOKEN`; both keep it out of the process list).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The admin token: on the command line it works with a warning, since every local
        /// user can read it in the process list.
        #[arg(long, env = "PROXY_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print one JSON document (stable field names; see README) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Round trips to a node over the path a new flow to it takes now, with real probe
    /// flows through the mesh (sent by the local node, asked through its admin API).
    Ping(probe::ProbeArgs),
    /// The path a new flow to a node takes now, and the round trip to each hop of it,
    /// with real probe flows (sent by the local node, asked through its admin API).
    Trace(probe::ProbeArgs),
    /// A five-region mesh on loopback that shows routing, failover and multipath live
    /// (no config, no root; about 20 seconds).
    Demo {
        /// A shorter run for CI: checks its own outcome, no pauses.
        #[arg(long)]
        quick: bool,
        /// Leave the cluster running at the end and print each node's admin address.
        #[arg(long)]
        keep: bool,
    },
    /// Make and manage a mesh.
    Mesh {
        /// The mesh subcommand.
        #[command(subcommand)]
        command: MeshCommand,
    },
    /// Print a shell completion script, e.g. `proxy completions bash >
    /// /etc/bash_completion.d/proxy`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with `--dir` write one page per command there.
    Man {
        /// Write `proxy.1`, `proxy-run.1`, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `proxy mesh ...`
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Make a mesh: the CA, the scheduler's certificate and config, and a first join
    /// token (optionally certificates for nodes set up by hand).
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated node ids to make certificates for by hand, e.g. `a,b,c`
        /// (`mesh join` needs none).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// How long the first join token is valid.
        #[arg(long, default_value = "24h")]
        token_ttl: String,
        /// How many machines the first join token enrolls.
        #[arg(long, default_value_t = 10)]
        token_uses: u32,
    },
    /// Manage join tokens.
    Token {
        /// The token subcommand.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enroll this machine: make its key here, get a certificate from the scheduler,
    /// write a node config, and start the node.
    Join {
        /// The scheduler's QUIC address, `host:port`; several comma-separated when the
        /// mesh has several schedulers (tried in turn).
        #[arg(long)]
        scheduler: String,
        /// The join token: better from `PROXY_JOIN_TOKEN` or `--token-file`, which keep it
        /// out of the process list.
        #[arg(long, env = "PROXY_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A file holding the join token (wins over `PROXY_JOIN_TOKEN`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// This node's id: 1-63 of a-z, 0-9 and '-'.
        #[arg(long)]
        node_id: String,
        /// This node's region label.
        #[arg(long)]
        region: String,
        /// Where to write node.key, node.crt, ca.crt and config.yaml.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Where to put what the node rewrites while it runs (node.crt, renewed in place,
        /// and its data directory), so `--dir` can stay read-only; default: `--dir`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Write the files but do not start the node.
        #[arg(long)]
        no_start: bool,
        /// UDP address of this node's QUIC endpoint (`mesh.bind`).
        #[arg(long, default_value = "0.0.0.0:7800")]
        bind: std::net::SocketAddr,
        /// Address other nodes dial (`mesh.advertise`); default: the address the
        /// scheduler sees, on the bind port.
        #[arg(long)]
        advertise: Option<String>,
        /// The node's admin API address (`common.admin_addr`).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_addr: std::net::SocketAddr,
    },
    /// List the mesh's nodes: region, address, certificate expiry, last seen, removal.
    Nodes {
        /// The scheduler's config file (run this where the scheduler runs).
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
        /// Print JSON (stable field names; see README) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the mesh: the scheduler revokes it, every node drops its links
    /// to it and refuses its certificate from then on.
    Remove {
        /// The node id.
        node_id: String,
        /// The scheduler's config file (run this where the scheduler runs).
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
    },
}

/// `proxy mesh token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new join token (stdout: the token alone).
    Create {
        /// The scheduler's config file (run this where the scheduler runs).
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
        /// Only this node id may join with it.
        #[arg(long)]
        node_id: Option<String>,
        /// How long it is valid, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many machines it enrolls.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Groups the nodes it enrolls are in, comma-separated: their certificates name
        /// them, and `exit_policy` rules can allow `from: [group:NAME]`.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List the join tokens: id, state, node binding, groups, uses, expiry, creation.
    List {
        /// The scheduler's config file (run this where the scheduler runs).
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
        /// Print JSON (stable field names; see README) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token: every join with it is refused from now on.
    Revoke {
        /// The token's id, as `mesh token list` shows it (or a longer prefix of its hash).
        id: String,
        /// The scheduler's config file (run this where the scheduler runs).
        #[arg(short = 'c', long = "config", default_value = "scheduler.yaml")]
        config: PathBuf,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the commands that log read RUST_LOG.
    let logs = matches!(
        cli.command,
        None | Some(Command::Run { .. } | Command::Scheduler { .. } | Command::Demo { .. })
    );
    let filter = cli.log_level.clone().or_else(|| if logs { rust_log() } else { None });
    let filter = filter.as_ref();
    match cli.command {
        Some(Command::Run { config }) => run(&config, filter),
        Some(Command::Check { config }) => check(&config),
        Some(Command::Scheduler { config }) => run_scheduler(&config, filter),
        Some(Command::Status { admin, scheduler, token_file, token, json }) => {
            match admin_token(token_file.as_deref(), token) {
                Ok(token) => status(&admin, scheduler.as_deref(), token, json),
                Err(e) => {
                    eprintln!("proxy status: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Mesh { command }) => mesh(command, filter),
        Some(Command::Ping(args)) => probe::run(crate::node::probe::ProbeMode::Ping, args),
        Some(Command::Trace(args)) => probe::run(crate::node::probe::ProbeMode::Trace, args),
        Some(Command::Demo { quick, keep }) => demo(crate::demo::DemoOptions { quick, keep }, filter),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "proxy", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Man { dir }) => man(dir.as_deref()),
        None => run(cli.config.as_deref().unwrap_or(Path::new("config.yaml")), filter),
    }
}

/// `proxy man`: the page on standard output, or every command's page into `dir`.
fn man(dir: Option<&Path>) -> ExitCode {
    let written = match dir {
        None => clap_mangen::Man::new(man_command()).render(&mut std::io::stdout()),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(man_command(), dir)),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command as the man pages show it: the release's version without the commit, so
/// the pages packaged from the repository (packaging/man) change only with the options.
fn man_command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// `RUST_LOG` as a filter, when it is set and parses. It is read only by the commands that
/// log, and a value meant for another program (span filters, say) is ignored with a
/// warning rather than stopping `proxy`.
fn rust_log() -> Option<LogFilter> {
    let text = std::env::var("RUST_LOG").ok().filter(|t| !t.trim().is_empty())?;
    text.parse()
        .map_err(|e| {
            eprintln!("proxy: warning: RUST_LOG is ignored: `{}` {e}", crate::logging::log_escape(&text))
        })
        .ok()
}

/// `--log-level` as a filter, or clap's error with what is wrong.
fn parse_log_filter(text: &str) -> Result<LogFilter, String> {
    text.parse()
}

/// The admin token for `proxy status`, `ping` and `trace`: from `--token-file`, else
/// `--token` or `PROXY_ADMIN_TOKEN`, else none.
fn admin_token(file: Option<&Path>, token: Option<String>) -> Result<Option<String>, String> {
    secret(file, token, "PROXY_ADMIN_TOKEN", "proxy status")
}

/// A secret from `--token-file` (surrounding space trimmed; empty is an error), else from
/// `--token` or the environment variable `var`, which clap fills into the same field. A
/// value typed on the command line gets a warning (every local user sees it in the process
/// list), and with `--token-file` as well it is refused.
fn secret(
    file: Option<&Path>,
    token: Option<String>,
    var: &str,
    who: &str,
) -> Result<Option<String>, String> {
    let typed = token.as_deref().is_some_and(|t| !from_env(var, t));
    if typed && file.is_some() {
        return Err("give --token or --token-file, not both".into());
    }
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("--token-file {}: {e}", file.display()))?;
        // Files end in a newline; a token is visible ASCII, so surrounding space is not part of it.
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("--token-file {}: the file is empty", file.display()));
        }
        return Ok(Some(token.to_string()));
    }
    if typed {
        eprintln!(
            "{who}: warning: --token shows the token to every local user in the process list; \
             use --token-file FILE or {var}"
        );
    }
    Ok(token)
}

fn status(admin: &str, scheduler: Option<&str>, token: Option<String>, json: bool) -> ExitCode {
    let runtime = match start_runtime(false, "proxy status") {
        Ok(r) => r,
        Err(code) => return code,
    };
    use crate::admin::{status, status_json};
    let page = match (scheduler, json) {
        (Some(addr), false) => runtime
            .block_on(status::fetch_scheduler(addr, token.as_deref()))
            .map(|input| status::render_scheduler(&input)),
        (Some(addr), true) => runtime
            .block_on(status::fetch_scheduler(addr, token.as_deref()))
            .and_then(|input| status_json::scheduler_document(&input)),
        (None, false) => {
            runtime.block_on(status::fetch(admin, token.as_deref())).map(|input| status::render(&input))
        }
        (None, true) => runtime
            .block_on(status::fetch(admin, token.as_deref()))
            .and_then(|input| status_json::node_document(&input)),
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

fn demo(options: crate::demo::DemoOptions, filter: Option<&LogFilter>) -> ExitCode {
    // The nodes' own logs would bury the demo's tables: errors only, unless asked.
    let quiet = LogConfig { level: config::LogLevel::Error.into(), ..LogConfig::default() };
    if let Err(code) = start_logging(&quiet, "log", filter) {
        return code;
    }
    let runtime = match start_runtime(true, "proxy demo") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(crate::demo::run(options)) {
        Ok(checks) if checks.iter().all(|c| c.ok) => ExitCode::SUCCESS,
        Ok(checks) => {
            let failed = checks.iter().filter(|c| !c.ok).count();
            eprintln!("proxy demo: {failed} check(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxy demo: {e:#}");
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

fn mesh(command: MeshCommand, filter: Option<&LogFilter>) -> ExitCode {
    match command {
        MeshCommand::Init { dir, nodes, token_ttl, token_uses } => {
            mesh_init(&dir, &nodes, &token_ttl, token_uses)
        }
        MeshCommand::Token { command: TokenCommand::Create { config, node_id, ttl, uses, groups } } => {
            token_create(&config, node_id, groups, &ttl, uses)
        }
        MeshCommand::Token { command: TokenCommand::List { config, json } } => {
            mesh_admin::token_list(&config, json)
        }
        MeshCommand::Token { command: TokenCommand::Revoke { id, config } } => {
            mesh_admin::token_revoke(&config, &id)
        }
        MeshCommand::Nodes { config, json } => mesh_admin::nodes(&config, json),
        MeshCommand::Join {
            scheduler,
            token,
            token_file,
            node_id,
            region,
            dir,
            state_dir,
            no_start,
            bind,
            advertise,
            admin_addr,
        } => {
            let token = match join_token(token, token_file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("proxy mesh join: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = crate::join::JoinOptions {
                scheduler,
                token,
                node_id,
                region,
                dir,
                state_dir,
                bind,
                advertise,
                admin_addr,
            };
            mesh_join(&options, no_start, filter)
        }
        MeshCommand::Remove { node_id, config } => mesh_remove(&config, &node_id),
    }
}

/// The join token from `--token-file`, else `--token` or `PROXY_JOIN_TOKEN`.
fn join_token(token: Option<String>, file: Option<PathBuf>) -> Result<String, String> {
    secret(file.as_deref(), token, "PROXY_JOIN_TOKEN", "proxy mesh join")?
        .ok_or_else(|| "give --token-file FILE, or set PROXY_JOIN_TOKEN (or --token)".into())
}

/// Whether `value` is what the environment variable `var` holds: clap fills one field from
/// the command line or the environment, and only a value typed on the command line is
/// shown to every local user in the process list.
fn from_env(var: &str, value: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == value)
}

/// A token's lifetime and uses from the command line: 1 s to 365 days, 1 to 10,000 uses.
fn token_limits(ttl: &str, uses: u32) -> Result<std::time::Duration, String> {
    let ttl = config::parse_duration(ttl).map_err(|e| format!("--ttl: {e}"))?;
    if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(365 * 86_400) {
        return Err("--ttl: must be between 1s and 365d".into());
    }
    if !(1..=10_000).contains(&uses) {
        return Err("--uses: must be 1 to 10000".into());
    }
    Ok(ttl)
}

fn load_scheduler_config(path: &Path, who: &str) -> Result<config::scheduler::SchedulerConfig, ExitCode> {
    config::scheduler::load(path)
        .map_err(|errors| config_refused(&errors, &format!("{who}: {}", path.display())))
}

fn token_create(
    config_path: &Path,
    node_id: Option<String>,
    groups: Vec<String>,
    ttl: &str,
    uses: u32,
) -> ExitCode {
    let who = "proxy mesh token create";
    let ttl = match token_limits(ttl, uses) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{who}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(id) = &node_id
        && (!crate::core::wire::is_valid_node_id(id) || id == config::scheduler::SCHEDULER_ID)
    {
        eprintln!("{who}: --node-id: `{}` is not a usable node id", crate::logging::log_escape(id));
        return ExitCode::from(2);
    }
    if let Some(bad) = groups.iter().find(|g| !crate::pki::is_valid_group(g)) {
        eprintln!(
            "{who}: --groups: `{}` is not a group name (1-63 of a-z, 0-9 and '-')",
            crate::logging::log_escape(bad)
        );
        return ExitCode::from(2);
    }
    let scheduler = match load_scheduler_config(config_path, who) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if scheduler.ca_key.is_none() {
        eprintln!(
            "{who}: {} has no `ca_key`: that scheduler signs no certificates, so no one could join with a token",
            config_path.display()
        );
        return ExitCode::from(2);
    }
    let granted = if groups.is_empty() { String::new() } else { format!(", groups {}", groups.join(", ")) };
    match crate::scheduler::enrollment::create_token(&scheduler, node_id.clone(), groups, ttl, uses) {
        Ok(token) => {
            println!("{}", token.encode());
            let bound = node_id.map_or_else(String::new, |id| format!(", for node `{id}` only")) + &granted;
            let id = crate::core::join_token::hex(&token.hash())[..crate::core::join_token::TOKEN_ID_LEN]
                .to_string();
            eprintln!(
                "join token {id} valid for {ttl:?}, {uses} use(s){bound}; only its hash is stored (revoke: proxy mesh token revoke {id})"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{who}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mesh_remove(config_path: &Path, node_id: &str) -> ExitCode {
    let who = "proxy mesh remove";
    let scheduler = match load_scheduler_config(config_path, who) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::scheduler::enrollment::remove_node(&scheduler, node_id) {
        Ok(Some(member)) => {
            println!(
                "removed `{node_id}`: the node id and its {} known certificate(s) are revoked, and any made for it before now; a running scheduler applies this within a second",
                member.certs.len()
            );
            println!(
                "to enroll `{node_id}` again: proxy mesh token create --node-id {node_id} (a general token is refused for a removed id)"
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!(
                "`{node_id}` was not a member the scheduler knew; its id, and any certificate made for it before now, are refused from now on"
            );
            println!(
                "to enroll `{node_id}` again: proxy mesh token create --node-id {node_id} (a general token is refused for a removed id)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{who}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mesh_join(options: &crate::join::JoinOptions, no_start: bool, filter: Option<&LogFilter>) -> ExitCode {
    let who = "proxy mesh join";
    let runtime = match start_runtime(false, who) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let joined = runtime.block_on(crate::join::join(options));
    drop(runtime);
    let joined = match joined {
        Ok(j) => j,
        Err(e @ crate::join::JoinError::Usage(_)) => {
            eprintln!("{who}: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{who}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for f in &joined.files {
        println!("wrote {}", f.display());
    }
    println!("joined the mesh as `{}`", options.node_id);
    if no_start {
        println!("start the node with: proxy run -c {}", joined.config.display());
        return ExitCode::SUCCESS;
    }
    start_joined_node(&joined.config, filter)
}

/// Becomes `proxy run -c CONFIG`: a fresh process image, so the token given on the
/// command line or in the environment is not left readable in `/proc` while the node
/// runs for months.
fn start_joined_node(config: &Path, filter: Option<&LogFilter>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let error = match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .arg("run")
            .arg("-c")
            .arg(config)
            .args(filter.map(|f| format!("--log-level={f}")))
            .env_remove("PROXY_JOIN_TOKEN")
            .exec(),
        Err(e) => e,
    };
    eprintln!("proxy mesh join: cannot start the node ({error}); run: proxy run -c {}", config.display());
    ExitCode::FAILURE
}

fn mesh_init(dir: &Path, nodes: &[String], token_ttl: &str, token_uses: u32) -> ExitCode {
    let who = "proxy mesh init";
    let ttl = match token_limits(token_ttl, token_uses) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{who}: {}", e.replace("--ttl", "--token-ttl").replace("--uses", "--token-uses"));
            return ExitCode::from(2);
        }
    };
    match crate::pki::init_mesh(dir, nodes) {
        Ok(written) => {
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            println!("private keys (*.key) are mode 0600; keep them off version control");
            let scheduler_yaml = dir.join("scheduler.yaml");
            let scheduler = match load_scheduler_config(&scheduler_yaml, who) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Certificates made here are members from the start, so `mesh remove` knows them.
            for node in nodes {
                let recorded = std::fs::read_to_string(dir.join(format!("{node}.crt")))
                    .map_err(anyhow::Error::from)
                    .and_then(|pem| crate::scheduler::enrollment::record_certificate(&scheduler, node, &pem));
                if let Err(e) = recorded {
                    eprintln!("{who}: recording {node}'s certificate: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
            match crate::scheduler::enrollment::create_token(&scheduler, None, Vec::new(), ttl, token_uses) {
                Ok(token) => {
                    println!("join token ({token_uses} use(s), valid {ttl:?}): {}", token.encode());
                    println!("next: proxy scheduler -c {}", scheduler_yaml.display());
                    println!(
                        "then on each machine: PROXY_JOIN_TOKEN=<token> proxy mesh join --scheduler <this host>:7900 --node-id <id> --region <region>"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{who}: {e:#}");
                    ExitCode::FAILURE
                }
            }
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

fn run(path: &Path, filter: Option<&LogFilter>) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return config_refused(&errors, &format!("proxy: refusing to start {}", path.display()));
        }
    };
    let log = match start_logging(&config.common.log, "common.log_file", filter) {
        Ok(log) => log,
        Err(code) => return code,
    };
    let runtime = match start_runtime(true, "proxy") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run_node(config, path, &log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_scheduler(path: &Path, filter: Option<&LogFilter>) -> ExitCode {
    let config = match config::scheduler::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return config_refused(&errors, &format!("proxy: refusing to start {}", path.display()));
        }
    };
    let log = match start_logging(&config.log, "log_file", filter) {
        Ok(log) => log,
        Err(code) => return code,
    };
    let runtime = match start_runtime(true, "proxy") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let run = async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handled from before READY=1, else a signal right after it would kill the process.
        let (mut term, mut int, mut hup) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        );
        let scheduler = crate::scheduler::Scheduler::start(config).await?;
        crate::service_notify::ready(&format!("scheduling; admin API on {}", scheduler.admin_addr()));
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
                _ = hup.recv() => {
                    crate::service_notify::reloading("reloading the config (SIGHUP)");
                    reload_scheduler(&scheduler, &log, path);
                    crate::service_notify::ready(&format!("scheduling; admin API on {}", scheduler.admin_addr()));
                }
            }
        }
        crate::service_notify::stopping("stopping");
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

async fn run_node(config: Config, path: &Path, log: &LiveLog) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handled from before READY=1: a SIGHUP's default action would end the process.
    let (mut term, mut int, mut hup) =
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?);
    let node = Node::start(config).await?;
    for l in node.listeners() {
        tracing::info!(listener = %l.name, addr = %l.addr, "listening");
    }
    // Node::start returns with every socket bound and the admin API served.
    crate::service_notify::ready(&serving_status(&node));
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
                "config file changed"
            }
        };
        crate::service_notify::reloading(&format!("reloading the config ({why})"));
        // The file as read now is the one applied, whatever asked: the poll does not
        // apply it a second time after a SIGHUP.
        seen = stamp();
        settling = None;
        let status = match reload_node(&node, log, path) {
            Ok(report) => {
                tracing::info!(version = report.version, changes = %report.summary, "{why}: config applied");
                serving_status(&node)
            }
            Err(e) => {
                tracing::error!("{why}: config refused, the running one stays: {e}");
                format!("{}; the last reload was refused (see the log)", serving_status(&node))
            }
        };
        crate::service_notify::ready(&status);
    }
    crate::service_notify::stopping(&format!("draining {} open flow(s)", node.stats().flows_current));
    let report = node.shutdown().await;
    tracing::info!(open = report.open_at_start, reset = report.reset_at_deadline, "shutdown complete");
    Ok(())
}

/// Reloads a node's config file: the log settings are checked (a new log file opened)
/// first, then the node applies the rest or refuses it all, then the log settings apply.
fn reload_node(node: &Node, log: &LiveLog, path: &Path) -> Result<crate::node::ReloadReport, String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    let change = log.prepare(&config.common.log).map_err(|e| format!("common.log_file: {e}"))?;
    let report = node.reload(config).map_err(|e| e.to_string())?;
    log.apply(change);
    Ok(report)
}

/// `SIGHUP` to the scheduler: re-reads its config and applies what changes live, or
/// refuses the whole file with a log line; the running config stays then.
fn reload_scheduler(scheduler: &crate::scheduler::Scheduler, log: &LiveLog, path: &Path) {
    let applied = config::scheduler::load(path).map_err(|e| e.to_string()).and_then(|config| {
        let change = log.prepare(&config.log).map_err(|e| format!("log_file: {e}"))?;
        let mut changes = scheduler.reload(config).map_err(|e| e.to_string())?;
        changes.extend(change.summary.iter().cloned());
        log.apply(change);
        Ok(changes)
    });
    match applied {
        Ok(changes) if changes.is_empty() => tracing::info!("SIGHUP: config re-read, nothing changed"),
        Ok(changes) => tracing::info!(changes = %changes.join("; "), "SIGHUP: config applied"),
        Err(e) => tracing::error!("SIGHUP: config refused, the running one stays: {e}"),
    }
}

/// The node's line in `systemctl status`.
fn serving_status(node: &Node) -> String {
    format!(
        "serving: config version {}, {} listener(s), admin API on {}",
        node.config_version(),
        node.listeners().len(),
        node.admin_addr()
    )
}

/// Installs the logger; a log file that cannot be opened is a config problem (exit 2),
/// reported under `key`.
fn start_logging(log: &LogConfig, key: &str, filter: Option<&LogFilter>) -> Result<LiveLog, ExitCode> {
    match LiveLog::install(log, filter) {
        Ok(live) => Ok(live),
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
