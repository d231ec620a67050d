//! `proxy ping NODE` and `proxy trace NODE`: ask the local node's admin API
//! (`POST /api/probe`) to send probe flows along the path a new flow to NODE takes now,
//! and print the round trips as they come (the node streams them): one line per probe and
//! a summary for a ping, a table of hops for a trace. Exit 0 when NODE answered, 1 when it did not (no path, a hop
//! refused or silent, the admin API unreachable), 2 for bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::admin::http::BodySink;
use crate::logging::log_escape;
use crate::node::probe::{
    HopReport, MAX_COUNT, MAX_INTERVAL_MS, MIN_INTERVAL_MS, ProbeEvent, ProbeMode, ProbeReport, ProbeRequest,
};
use crate::text_table::printable;

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
        // The text is printed as the probes happen; `--json` is the report, once.
        stream: !args.json,
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
    let mut printer = LivePrinter::new(mode);
    let mut print_steps = |bytes: &[u8]| {
        use std::io::Write;
        let text = printer.feed(bytes);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) is no reason to stop: the exit code still tells.
        let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    };
    let on_body: Option<BodySink<'_>> = if args.json { None } else { Some(&mut print_steps) };
    let mut answer = runtime.block_on(ask(&args.admin.admin, token.as_deref(), &request, timeout, on_body));
    // A node from before streamed probes refuses the field: ask it for the report alone,
    // and print that the same way once it is in.
    let unstreamed = matches!(&answer, Ok((400, body)) if body.contains("unknown field `stream`"));
    if unstreamed {
        let request = ProbeRequest { stream: false, ..request };
        answer = runtime.block_on(ask(&args.admin.admin, token.as_deref(), &request, timeout, None));
    }
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
    let report = if args.json || unstreamed {
        match serde_json::from_str::<ProbeReport>(&body) {
            Ok(report) if args.json => {
                println!("{}", body.trim());
                report
            }
            Ok(report) => {
                print!("{}", printer.replay(&report));
                report
            }
            Err(e) => {
                eprintln!("{who}: the node's answer is not a probe report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match printer.report.take() {
            Some(report) => report,
            None => {
                eprintln!("{who}: the node's answer ended before its report");
                return ExitCode::FAILURE;
            }
        }
    };
    if report.reached { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The CSRF token a token-less admin API asks of loopback callers, then the probe.
async fn ask(
    addr: &str,
    token: Option<&str>,
    request: &ProbeRequest,
    timeout: Duration,
    on_body: Option<BodySink<'_>>,
) -> Result<(u16, String), String> {
    use crate::admin::http::{get, post, post_streamed};
    let (status, body) =
        get(addr, "/api/console/session", token, Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/api/console/session: HTTP {status}: {}", body.trim()));
    }
    let session: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/api/console/session: {e}"))?;
    let csrf = session.get("csrf").and_then(|c| c.as_str());
    let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
    let answer = match on_body {
        Some(on_body) => post_streamed(addr, "/api/probe", token, (&json, csrf), timeout, on_body).await,
        None => post(addr, "/api/probe", token, (&json, csrf), timeout).await,
    };
    answer.map_err(|e| e.to_string())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The trace table's columns, and the least width of each (the numbers' columns fit
/// `1234.5`), so rows printed as their hops finish line up.
const TRACE_COLUMNS: [&str; 8] = ["HOP", "NODE", "SENT", "RECV", "RTT MS", "DELTA MS", "BEST", "WORST"];
const TRACE_WIDTHS: [usize; 8] = [3, 4, 4, 4, 6, 8, 6, 6];

/// Turns the steps of a streamed ping or trace (Server-Sent Events, see
/// [`ProbeEvent`]) into text as they arrive.
pub(crate) struct LivePrinter {
    mode: ProbeMode,
    /// Bytes of a message not complete yet.
    pending: Vec<u8>,
    /// From the `path` step.
    node: String,
    route: Option<String>,
    path: Vec<String>,
    /// The head line was printed.
    headed: bool,
    /// The report, once it came.
    report: Option<ProbeReport>,
}

impl LivePrinter {
    /// A printer for a ping or a trace.
    pub(crate) fn new(mode: ProbeMode) -> Self {
        Self {
            mode,
            pending: Vec::new(),
            node: String::new(),
            route: None,
            path: Vec::new(),
            headed: false,
            report: None,
        }
    }

    /// The text for the complete messages in what came so far, with `bytes`.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = self.pending.drain(..end + 2).collect();
            let message = String::from_utf8_lossy(&message);
            for data in message.lines().filter_map(|l| l.strip_prefix("data: ")) {
                match serde_json::from_str::<ProbeEvent>(data) {
                    Ok(event) => out.push_str(&self.step(event)),
                    Err(e) => out.push_str(&format!("(a step this version cannot read: {e})\n")),
                }
            }
        }
        out
    }

    /// The text for a whole report (from a node that does not stream), as if its steps
    /// had come one by one.
    pub(crate) fn replay(&mut self, report: &ProbeReport) -> String {
        let mut steps = vec![ProbeEvent::Path {
            node: report.node.clone(),
            mode: report.mode,
            route: report.route.clone(),
            path: report.path.clone(),
        }];
        for (i, hop) in report.hops.iter().enumerate() {
            let index = match report.mode {
                ProbeMode::Ping => report.path.len().saturating_sub(1),
                ProbeMode::Trace => i,
            };
            let node = || hop.node.clone();
            if let Some(open_ms) = hop.open_ms {
                steps.push(ProbeEvent::Opened { hop: index, node: node(), open_ms, sealed: hop.sealed });
            }
            for (seq, rtt_ms) in (1..).zip(&hop.probes) {
                steps.push(ProbeEvent::Probe { hop: index, node: node(), seq, rtt_ms: *rtt_ms });
            }
            steps.push(ProbeEvent::Hop { hop: index, report: hop.clone() });
        }
        steps.push(ProbeEvent::Report(report.clone()));
        steps.into_iter().map(|step| self.step(step)).collect()
    }

    /// The text for one step.
    fn step(&mut self, event: ProbeEvent) -> String {
        match event {
            ProbeEvent::Path { node, route, path, .. } => {
                (self.node, self.route, self.path) = (node, route, path);
                String::new()
            }
            ProbeEvent::Opened { sealed, .. } => self.head(Some(sealed)),
            ProbeEvent::Probe { seq, rtt_ms, .. } if self.mode == ProbeMode::Ping => match rtt_ms {
                Some(rtt) => format!("seq={seq} rtt={rtt:.1} ms\n"),
                None => format!("seq={seq} no echo\n"),
            },
            ProbeEvent::Probe { .. } => String::new(),
            ProbeEvent::Hop { hop, report } => {
                let head = self.head(None);
                match self.mode {
                    ProbeMode::Ping => head + &ping_summary(&self.node, &report),
                    ProbeMode::Trace => head + &trace_row(hop, &report, &self.widths()),
                }
            }
            ProbeEvent::Report(report) => {
                let text = match self.mode {
                    ProbeMode::Ping => String::new(),
                    ProbeMode::Trace => trace_end(&report),
                };
                self.report = Some(report);
                text
            }
        }
    }

    /// The head line (and a trace's column titles) the first time; `sealed` once a flow
    /// opened.
    fn head(&mut self, sealed: Option<bool>) -> String {
        if std::mem::replace(&mut self.headed, true) {
            return String::new();
        }
        let path = self.path.iter().map(|n| log_escape(n)).collect::<Vec<_>>().join(" -> ");
        let route = self
            .route
            .as_ref()
            .map_or_else(|| "direct link".to_string(), |r| format!("route {}", log_escape(r)));
        let how = match sealed {
            Some(true) => format!("{route}, sealed"),
            Some(false) => format!("{route}, unsealed"),
            None => route,
        };
        let title = match self.mode {
            ProbeMode::Ping => "PING",
            ProbeMode::Trace => "TRACE",
        };
        let mut out = format!("{title} {} over {path} ({how})\n", log_escape(&self.node));
        if self.mode == ProbeMode::Trace {
            let titles = vec![TRACE_COLUMNS.map(String::from).to_vec()];
            out.push_str(&crate::text_table::align_to(&titles, &self.widths()));
        }
        out
    }

    /// The trace table's column widths: the node column fits every node on the path.
    fn widths(&self) -> Vec<usize> {
        let mut widths = TRACE_WIDTHS.to_vec();
        widths[1] = self.path.iter().map(|n| printable(n).chars().count()).fold(widths[1], usize::max);
        widths
    }
}

/// A ping's last lines: its error, if any, and the summary.
fn ping_summary(node: &str, hop: &HopReport) -> String {
    let mut out = String::new();
    if let Some(e) = &hop.error {
        out.push_str(&format!("error: {}\n", log_escape(e)));
    }
    let loss =
        if hop.sent == 0 { 100.0 } else { 100.0 * f64::from(hop.sent - hop.received) / f64::from(hop.sent) };
    out.push_str(&format!(
        "--- {}: {} sent, {} received, {loss:.0}% loss; rtt min/avg/max = {}/{}/{} ms; flow opened in {} ms\n",
        log_escape(node),
        hop.sent,
        hop.received,
        ms(hop.min_ms),
        ms(hop.avg_ms),
        ms(hop.max_ms),
        ms(hop.open_ms),
    ));
    out
}

/// One row of the trace table: `path[index]`'s figures.
fn trace_row(index: usize, hop: &HopReport, widths: &[usize]) -> String {
    let row = vec![
        (index + 1).to_string(),
        hop.node.clone(),
        hop.sent.to_string(),
        hop.received.to_string(),
        ms(hop.avg_ms),
        ms(hop.delta_ms),
        ms(hop.min_ms),
        ms(hop.max_ms),
    ];
    crate::text_table::align_to(&[row], widths)
}

/// A trace's last line: where it stopped, or the end-to-end round trip.
fn trace_end(report: &ProbeReport) -> String {
    match report.hops.last() {
        Some(last) if !report.reached => {
            let why = last.error.as_deref().unwrap_or("no echo in time");
            format!(
                "stopped at hop {} ({}): {}\n",
                report.hops.len(),
                log_escape(&last.node),
                log_escape(why)
            )
        }
        Some(last) => format!("end to end: {} ms\n", ms(last.avg_ms)),
        None => "no hop was probed\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(node: &str, probes: Vec<Option<f64>>, delta_ms: Option<f64>) -> HopReport {
        let mut hop = HopReport::new(node);
        hop.probes = probes;
        hop.summarise();
        hop.delta_ms = delta_ms;
        hop.open_ms = Some(3.0);
        hop.sealed = true;
        hop
    }

    /// `events` as the node frames them, cut into pieces of `cut` bytes.
    fn stream(events: &[ProbeEvent], cut: usize) -> Vec<Vec<u8>> {
        let bytes: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                format!("event: x\ndata: {}\n\n", serde_json::to_string(e).expect("json")).into_bytes()
            })
            .collect();
        bytes.chunks(cut).map(<[u8]>::to_vec).collect()
    }

    fn printed(mode: ProbeMode, events: &[ProbeEvent], cut: usize) -> (String, Option<ProbeReport>) {
        let mut printer = LivePrinter::new(mode);
        let text: String = stream(events, cut).iter().map(|piece| printer.feed(piece)).collect();
        (text, printer.report)
    }

    fn path(mode: ProbeMode) -> ProbeEvent {
        ProbeEvent::Path {
            node: "c".into(),
            mode,
            route: Some("to-c".into()),
            path: vec!["b".into(), "c".into()],
        }
    }

    #[test]
    fn a_ping_prints_each_probe_as_it_comes_then_its_summary() {
        let done = hop("c", vec![Some(51.25), None], None);
        let report = ProbeReport {
            node: "c".into(),
            mode: ProbeMode::Ping,
            route: Some("to-c".into()),
            path: vec!["b".into(), "c".into()],
            hops: vec![done.clone()],
            reached: true,
        };
        let events = [
            path(ProbeMode::Ping),
            ProbeEvent::Opened { hop: 1, node: "c".into(), open_ms: 3.0, sealed: true },
            ProbeEvent::Probe { hop: 1, node: "c".into(), seq: 1, rtt_ms: Some(51.25) },
            ProbeEvent::Probe { hop: 1, node: "c".into(), seq: 2, rtt_ms: None },
            ProbeEvent::Hop { hop: 1, report: done },
            ProbeEvent::Report(report.clone()),
        ];
        let expected = "PING c over b -> c (route to-c, sealed)\nseq=1 rtt=51.2 ms\nseq=2 no echo\n\
            --- c: 2 sent, 1 received, 50% loss; rtt min/avg/max = 51.2/51.2/51.2 ms; flow opened in 3.0 ms\n";
        for cut in [1, 7, 4096] {
            let (text, got) = printed(ProbeMode::Ping, &events, cut);
            assert_eq!(text, expected, "pieces of {cut}");
            assert_eq!(got.as_ref(), Some(&report));
        }
        assert_eq!(LivePrinter::new(ProbeMode::Ping).replay(&report), expected, "a report alone");
        // Only the steps so far: the probe line is out before the flow ends.
        let mut printer = LivePrinter::new(ProbeMode::Ping);
        let first: String = stream(&events[..3], 4096).iter().map(|p| printer.feed(p)).collect();
        assert!(first.ends_with("seq=1 rtt=51.2 ms\n"), "{first}");
    }

    #[test]
    fn a_trace_prints_a_row_per_hop_and_where_it_stopped() {
        let mut b = hop("b", vec![Some(50.0)], Some(50.0));
        b.sealed = false;
        let mut c = HopReport::new("c");
        c.error = Some("refused by c: overloaded".into());
        let report = ProbeReport {
            node: "c".into(),
            mode: ProbeMode::Trace,
            route: Some("to-c".into()),
            path: vec!["b".into(), "c".into()],
            hops: vec![b.clone(), c.clone()],
            reached: false,
        };
        let events = [
            path(ProbeMode::Trace),
            ProbeEvent::Opened { hop: 0, node: "b".into(), open_ms: 3.0, sealed: false },
            ProbeEvent::Probe { hop: 0, node: "b".into(), seq: 1, rtt_ms: Some(50.0) },
            ProbeEvent::Hop { hop: 0, report: b },
            ProbeEvent::Hop { hop: 1, report: c },
            ProbeEvent::Report(report),
        ];
        let (text, got) = printed(ProbeMode::Trace, &events, 5);
        let replayed = got.map(|report| LivePrinter::new(ProbeMode::Trace).replay(&report));
        let expected = "TRACE c over b -> c (route to-c, unsealed)\n\
            HOP  NODE  SENT  RECV  RTT MS  DELTA MS  BEST    WORST\n\
            1    b     1     1     50.0    50.0      50.0    50.0\n\
            2    c     0     0     -       -         -       -\n\
            stopped at hop 2 (c): refused by c: overloaded\n";
        assert_eq!(text, expected);
        assert_eq!(replayed.as_deref(), Some(expected), "a report alone");
    }

    #[test]
    fn a_step_it_cannot_read_is_said_and_the_rest_still_prints() {
        let mut printer = LivePrinter::new(ProbeMode::Ping);
        let text = printer.feed(b"event: new\ndata: {\"event\":\"later\"}\n\n: keep-alive\n\n");
        assert!(text.starts_with("(a step this version cannot read: "), "{text}");
        assert!(printer.report.is_none());
    }
}
