//! `proxy ping NODE` and `proxy trace NODE`: ask the local node's admin API
//! (`POST /api/probe`) to send probe flows along the path a new flow to NODE takes now,
//! and print the round trips: one line per probe and a summary for a ping, a table of
//! hops for a trace. Exit 0 when NODE answered, 1 when it did not (no path, a hop
//! refused or silent, the admin API unreachable), 2 for bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::node::probe::{MAX_COUNT, MAX_INTERVAL_MS, MIN_INTERVAL_MS, ProbeMode, ProbeReport, ProbeRequest};

/// How to reach the local node's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The local node's admin address (`common.admin_addr`).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// A file holding the admin token, when the node requires one (wins over
    /// `PROXY_ADMIN_TOKEN`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The admin token (on the command line it is visible to every local user; prefer
    /// `--token-file` or `PROXY_ADMIN_TOKEN`).
    #[arg(long, env = "PROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `proxy ping` and `proxy trace` arguments.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The node id to probe.
    pub node: String,
    /// Probes to send (a trace: per hop), 1 to 50 [default: 5 for ping, 3 for trace].
    #[arg(short = 'c', long = "count", value_parser = clap::value_parser!(u32).range(1..=MAX_COUNT as i64))]
    pub count: Option<u32>,
    /// Time between probes, 10ms to 1s, e.g. `200ms` [default: 1s for ping, 100ms for
    /// trace].
    #[arg(short = 'i', long = "interval", value_parser = interval)]
    pub interval: Option<Duration>,
    /// Print the admin API's JSON answer instead of the text.
    #[arg(long)]
    pub json: bool,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
}

fn interval(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)?;
    let (min, max) = (Duration::from_millis(MIN_INTERVAL_MS), Duration::from_millis(MAX_INTERVAL_MS));
    if d < min || d > max {
        return Err(format!("must be {MIN_INTERVAL_MS}ms to {MAX_INTERVAL_MS}ms"));
    }
    Ok(d)
}

/// Runs `proxy ping` (`Ping`) or `proxy trace` (`Trace`).
pub(crate) fn run(mode: ProbeMode, args: ProbeArgs) -> ExitCode {
    let who = match mode {
        ProbeMode::Ping => "proxy ping",
        ProbeMode::Trace => "proxy trace",
    };
    let usage = |e: String| {
        eprintln!("{who}: {e}");
        ExitCode::from(2)
    };
    let request = ProbeRequest {
        node: args.node.clone(),
        mode,
        count: args.count,
        interval_ms: args.interval.map(|d| d.as_millis() as u64),
    };
    let (count, every) = match request.checked() {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let token = match super::admin_token(args.admin.token_file.as_deref(), args.admin.token) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let runtime = match super::start_runtime(false, who) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // The node bounds each flow: opening, each echo, the end; this only stops a wait on
    // an admin API that never answers.
    let per_flow = Duration::from_secs(20) + (every + Duration::from_secs(2)) * count;
    let flows =
        if mode == ProbeMode::Trace { crate::core::wire::HeaderLimits::default().max_hops } else { 1 };
    let timeout = per_flow * flows as u32 + Duration::from_secs(5);
    let answer = runtime.block_on(ask(&args.admin.admin, token.as_deref(), &request, timeout));
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{who}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| format!("HTTP {status}: {}", body.trim()));
        eprintln!("{who}: {message}");
        return if status == 400 { ExitCode::from(2) } else { ExitCode::FAILURE };
    }
    let report: ProbeReport = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{who}: the node's answer is not a probe report: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", body.trim());
    } else {
        match mode {
            ProbeMode::Ping => print!("{}", render_ping(&report)),
            ProbeMode::Trace => print!("{}", render_trace(&report)),
        }
    }
    if report.reached { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The CSRF token a token-less admin API asks of loopback callers, then the probe.
async fn ask(
    addr: &str,
    token: Option<&str>,
    request: &ProbeRequest,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use crate::admin::http::{get, post};
    let (status, body) =
        get(addr, "/api/console/session", token, Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/api/console/session: HTTP {status}: {}", body.trim()));
    }
    let session: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/api/console/session: {e}"))?;
    let csrf = session.get("csrf").and_then(|c| c.as_str());
    let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
    post(addr, "/api/probe", token, (&json, csrf), timeout).await.map_err(|e| e.to_string())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// How the path was chosen, and whether its flows were sealed (when one opened), e.g.
/// `route web, sealed`.
fn how(report: &ProbeReport) -> String {
    let route = report.route.as_ref().map_or_else(|| "direct link".to_string(), |r| format!("route {r}"));
    match report.hops.iter().find(|h| h.open_ms.is_some()) {
        Some(h) if h.sealed => format!("{route}, sealed"),
        Some(_) => format!("{route}, unsealed"),
        None => route,
    }
}

/// A ping's text: a head line, one line per probe, a summary.
pub(crate) fn render_ping(report: &ProbeReport) -> String {
    use crate::logging::log_escape;
    let Some(hop) = report.hops.first() else { return String::new() };
    let path = report.path.iter().map(|n| log_escape(n)).collect::<Vec<_>>().join(" -> ");
    let mut out = format!("PING {} over {path} ({})\n", log_escape(&report.node), how(report));
    for (seq, rtt) in hop.probes.iter().enumerate() {
        match rtt {
            Some(rtt) => out.push_str(&format!("seq={} rtt={rtt:.1} ms\n", seq + 1)),
            None => out.push_str(&format!("seq={} no echo\n", seq + 1)),
        }
    }
    if let Some(e) = &hop.error {
        out.push_str(&format!("error: {}\n", log_escape(e)));
    }
    let loss =
        if hop.sent == 0 { 100.0 } else { 100.0 * f64::from(hop.sent - hop.received) / f64::from(hop.sent) };
    out.push_str(&format!(
        "--- {}: {} sent, {} received, {loss:.0}% loss; rtt min/avg/max = {}/{}/{} ms; flow opened in {} ms\n",
        log_escape(&report.node),
        hop.sent,
        hop.received,
        ms(hop.min_ms),
        ms(hop.avg_ms),
        ms(hop.max_ms),
        ms(hop.open_ms),
    ));
    out
}

/// A trace's text: a head line, a table of hops, and where it stopped.
pub(crate) fn render_trace(report: &ProbeReport) -> String {
    use crate::logging::log_escape;
    let path = report.path.iter().map(|n| log_escape(n)).collect::<Vec<_>>().join(" -> ");
    let mut out = format!("TRACE {} over {path} ({})\n", log_escape(&report.node), how(report));
    let mut lines = vec![
        ["HOP", "NODE", "SENT", "RECV", "RTT MS", "DELTA MS", "BEST", "WORST"].map(String::from).to_vec(),
    ];
    for (i, hop) in report.hops.iter().enumerate() {
        lines.push(vec![
            (i + 1).to_string(),
            hop.node.clone(),
            hop.sent.to_string(),
            hop.received.to_string(),
            ms(hop.avg_ms),
            ms(hop.delta_ms),
            ms(hop.min_ms),
            ms(hop.max_ms),
        ]);
    }
    out.push_str(&crate::text_table::align(&lines));
    match report.hops.last() {
        Some(last) if !report.reached => {
            let why = last.error.as_deref().unwrap_or("no echo in time");
            out.push_str(&format!(
                "stopped at hop {} ({}): {}\n",
                report.hops.len(),
                log_escape(&last.node),
                log_escape(why)
            ));
        }
        _ => {
            let total = report.hops.last().and_then(|h| h.avg_ms);
            out.push_str(&format!("end to end: {} ms\n", ms(total)));
        }
    }
    out
}
