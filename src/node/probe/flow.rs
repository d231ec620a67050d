//! One probe flow: opened along a path with `Destination::Echo`, then `count` probes of
//! [`PROBE_LEN`] bytes, each timed from its write to its echo, then a clean end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::RecvStream;

use super::Progress;
use super::report::{HopReport, ProbeEvent};
use crate::core::wire::Destination;
use crate::node::flow::origin::new_header;
use crate::node::flow::seal;
use crate::node::link::send::LinkSend;
use crate::node::observe::flow_registry::FlowRole;
use crate::node::splice::sealing::{DownSeal, UpSeal};
use crate::node::splice::tcp_stream::read_reply;
use crate::node::splice::{FlowEnd, read_error, write_error};
use crate::node::{FlowGuard, Shared};

/// Bytes of one probe: its sequence number, then a fixed pattern the echo must repeat.
pub(crate) const PROBE_LEN: usize = 16;
/// What follows the sequence number in a probe.
const PATTERN: [u8; PROBE_LEN - 4] = *b"proxy-probe!";
/// How long a probe waits for its echo before it counts as lost.
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// Most time a probe flow may take to open, whatever the path's length.
const OPEN_LIMIT: Duration = Duration::from_secs(15);
/// How long the end of a probe flow waits for the exit's end.
const END_WAIT: Duration = Duration::from_secs(2);

/// The two directions of an open probe flow.
struct Open {
    send: LinkSend,
    recv: RecvStream,
    up: UpSeal,
    down: DownSeal,
    /// Bytes that came behind the reply, still as they came.
    rest: Bytes,
}

/// Opens a probe flow along `path` (the nodes after this one, its exit last), sends
/// `count` probes `interval` apart and reports their round trips, telling `progress` of
/// the opening and of each probe as they happen.
pub(crate) async fn measure(
    shared: &Arc<Shared>,
    path: &[String],
    count: u32,
    interval: Duration,
    progress: &Progress,
) -> HopReport {
    let (Some(first), Some(exit)) = (path.first(), path.last()) else {
        return HopReport::new("");
    };
    let hop = path.len() - 1;
    let mut report = HopReport::new(exit);
    let Some(guard) = FlowGuard::try_new(shared) else {
        report.error = Some("this node is at its flow limit (limits.max_flows)".into());
        return report;
    };
    let flow_id = shared.new_flow_id();
    guard.describe(|m| {
        m.flow_id = flow_id;
        m.origin = shared.id().to_string();
        m.role = FlowRole::Origin;
        m.destination = "echo (probe)".into();
        m.path = path.to_vec();
    });
    shared.counters.probes_sent.fetch_add(1, Ordering::Relaxed);
    let header = new_header(shared, flow_id, path[1..].to_vec(), Destination::Echo);
    let started = Instant::now();
    let limit = shared.timeouts_for(path.len()).reply.min(OPEN_LIMIT);
    let opened = async {
        let (send, mut recv, seal) =
            seal::open_stream(shared, first, &header, Vec::new()).await.map_err(|e| FlowEnd::Refused {
                reason: e.reason,
                hop: e.hop.unwrap_or_else(|| shared.id().to_string()),
                detail: e.detail,
            })?;
        let (up, mut down) = seal.split();
        let rest = read_reply(&mut recv, &mut down, &up).await?;
        Ok::<_, FlowEnd>(Open { send, recv, up, down, rest })
    };
    let end = match tokio::time::timeout(limit, opened).await {
        Err(_) => {
            report.error = Some(format!("no answer within {limit:?}"));
            FlowEnd::TimedOut("reply")
        }
        Ok(Err(end)) => {
            report.error = Some(describe(&end));
            end
        }
        Ok(Ok(open)) => {
            let open_ms = millis(started.elapsed());
            report.open_ms = Some(open_ms);
            report.sealed = open.up.is_sealed();
            let sealed = report.sealed;
            progress.send(|| ProbeEvent::Opened { hop, node: exit.clone(), open_ms, sealed });
            let told = |seq: u32, rtt_ms: Option<f64>| {
                progress.send(|| ProbeEvent::Probe { hop, node: exit.clone(), seq: seq + 1, rtt_ms })
            };
            exchange(open, (count, interval), &mut report, told).await
        }
    };
    if let FlowEnd::Refused { reason, .. } = &end {
        shared.counters.refused_origin(*reason, None);
    }
    report.summarise();
    guard.finish(&end);
    report
}

/// Sends the probes and reads their echoes; then ends the flow cleanly.
async fn exchange(
    mut open: Open,
    (count, interval): (u32, Duration),
    report: &mut HopReport,
    told: impl Fn(u32, Option<f64>),
) -> FlowEnd {
    let mut echoed: Vec<u8> = Vec::new();
    let mut pending = Some(std::mem::take(&mut open.rest));
    for seq in 0..count {
        let sent_at = Instant::now();
        // The write has a deadline of its own and is never cut by the echo's: a record cut
        // half sent (its nonce used) would break every later one, so a stalled write ends
        // the flow instead.
        let written = async {
            let data = open.up.seal(Bytes::copy_from_slice(&probe(seq)))?;
            match tokio::time::timeout(ECHO_WAIT, open.send.write_data(data)).await {
                Ok(written) => written.map_err(write_error),
                Err(_) => Err(FlowEnd::TimedOut("probe write")),
            }
        };
        let answered = match written.await {
            Ok(()) => {
                let echo = echo_of(seq, (&mut open.recv, &mut open.down), &mut echoed, &mut pending);
                // A late echo is matched by its sequence number while waiting for the next.
                match tokio::time::timeout(ECHO_WAIT, echo).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(end)) => Err(Some(end)),
                    Err(_) => Err(None),
                }
            }
            Err(end) => Err(Some(end)),
        };
        match answered {
            Ok(()) => {
                let rtt = millis(sent_at.elapsed());
                report.probes.push(Some(rtt));
                told(seq, Some(rtt));
            }
            Err(None) => {
                report.probes.push(None);
                told(seq, None);
            }
            Err(Some(end)) => {
                // Only probes sent count: this one is lost, the rest were never sent.
                report.probes.push(None);
                told(seq, None);
                report.error = Some(describe(&end));
                reset(&mut open, &end);
                return end;
            }
        }
        if seq + 1 < count {
            tokio::time::sleep_until((sent_at + interval).into()).await;
        }
    }
    match tokio::time::timeout(END_WAIT, finish(&mut open)).await {
        Ok(Ok(())) => FlowEnd::Completed,
        Ok(Err(end)) => {
            reset(&mut open, &end);
            end
        }
        Err(_) => {
            let end = FlowEnd::TimedOut("probe end");
            reset(&mut open, &end);
            end
        }
    }
}

/// Reads until the echo of probe `seq` is in; echoes of earlier (lost) probes are
/// skipped, anything else is a broken echo.
async fn echo_of(
    seq: u32,
    (recv, down): (&mut RecvStream, &mut DownSeal),
    echoed: &mut Vec<u8>,
    pending: &mut Option<Bytes>,
) -> Result<(), FlowEnd> {
    let mut plain = Vec::new();
    loop {
        while echoed.len() >= PROBE_LEN {
            let unit: Vec<u8> = echoed.drain(..PROBE_LEN).collect();
            let (number, pattern) = unit.split_at(4);
            let number = u32::from_be_bytes([number[0], number[1], number[2], number[3]]);
            if pattern != PATTERN || number > seq {
                return Err(FlowEnd::BadReply("the echo does not match the probe".into()));
            }
            if number == seq {
                return Ok(());
            }
        }
        let chunk = match pending.take() {
            Some(bytes) => bytes,
            None => match recv.read_chunk(4096, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => return Err(FlowEnd::BadReply("the probe flow ended early".into())),
                Err(e) => return Err(read_error(e)),
            },
        };
        down.open(chunk, &mut plain)?;
        plain.drain(..).for_each(|b| echoed.extend_from_slice(&b));
    }
}

/// Ends this direction (sealed end, finish) and waits for the exit's end.
async fn finish(open: &mut Open) -> Result<(), FlowEnd> {
    if let Some(fin) = open.up.fin()? {
        open.send.write_data(fin).await.map_err(write_error)?;
    }
    open.send.finish().map_err(|_| FlowEnd::PeerReset(0))?;
    let mut plain = Vec::new();
    loop {
        match open.recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => open.down.open(chunk.bytes, &mut plain)?,
            Ok(None) => return open.down.end(),
            Err(e) => return Err(read_error(e)),
        }
    }
}

fn reset(open: &mut Open, end: &FlowEnd) {
    let _ = open.send.reset(end.reset_code());
    let _ = open.recv.stop(end.reset_code());
}

/// Probe `seq`'s bytes.
fn probe(seq: u32) -> [u8; PROBE_LEN] {
    let mut bytes = [0u8; PROBE_LEN];
    bytes[..4].copy_from_slice(&seq.to_be_bytes());
    bytes[4..].copy_from_slice(&PATTERN);
    bytes
}

/// How a failed probe flow is told to the operator.
fn describe(end: &FlowEnd) -> String {
    match end {
        FlowEnd::Refused { reason, hop, detail } => {
            format!("refused by {hop}: {}: {}", reason.as_str(), crate::logging::log_escape(detail))
        }
        FlowEnd::TimedOut(what) => format!("timed out ({what})"),
        FlowEnd::LinkLost(why) => format!("link lost: {why}"),
        FlowEnd::PeerReset(code) => format!("reset by the far end (code {code})"),
        FlowEnd::BadReply(why) | FlowEnd::Protocol(why) => why.clone(),
        other => format!("{other:?}"),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
