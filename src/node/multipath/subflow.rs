//! The two tasks of one subflow: a writer that sends what the flow queued for it, and a
//! reader that takes frames from it. Each owns its half of the stream; when a task is
//! dropped before a clean end, its half is reset (or stopped) with the flow's failure
//! code, never finished, so a cut subflow never looks complete to the far end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quinn::{ReadError, RecvStream, VarInt, WriteError};
use tokio::time::Instant;

use crate::core::subflow_frame::FrameDecoder;
use crate::node::link::send::LinkSend;
use crate::node::multipath::state::WriterStep;
use crate::node::multipath::{Event, FLOW_RESET, FlowCore, codes_for_flow};
use crate::node::splice::sealing::{DownSeal, FlowSeal, UpSeal};
use crate::node::splice::tcp_stream::read_reply;
use crate::node::splice::{FlowEnd, codes};

/// Largest chunk read from a subflow at once.
const READ_CHUNK: usize = 64 * 1024;

/// The sending half of a subflow; reset on drop unless finished.
pub(crate) struct SendHalf {
    core: Arc<FlowCore>,
    send: LinkSend,
    seal: Arc<UpSeal>,
    finished: bool,
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .send
                .reset(VarInt::from_u64(self.core.fail_code.load(Ordering::Relaxed)).unwrap_or_default());
        }
    }
}

/// The receiving half of a subflow; stopped on drop unless read to its end.
pub(crate) struct RecvHalf {
    core: Arc<FlowCore>,
    recv: RecvStream,
    seal: DownSeal,
    /// The sending half's seal: the reply switches its key.
    up: Arc<UpSeal>,
    ended: bool,
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self
                .recv
                .stop(VarInt::from_u64(self.core.fail_code.load(Ordering::Relaxed)).unwrap_or_default());
        }
    }
}

/// Wraps a stream's halves for the tasks.
pub(crate) fn halves(
    core: &Arc<FlowCore>,
    send: LinkSend,
    recv: RecvStream,
    seal: FlowSeal,
) -> (SendHalf, RecvHalf) {
    let (up, down) = seal.split();
    let up = Arc::new(up);
    (
        SendHalf { core: core.clone(), send, seal: up.clone(), finished: false },
        RecvHalf { core: core.clone(), recv, seal: down, up, ended: false },
    )
}

/// Sends the frames the flow queues for `slot`, after `preamble` (the exit's reply).
/// After the flow completed, finishes the stream and waits (up to `linger`) until the
/// next node acknowledged it.
pub(crate) async fn write_loop(
    core: Arc<FlowCore>,
    slot: usize,
    mut half: SendHalf,
    preamble: Bytes,
    linger: Duration,
) {
    if !preamble.is_empty()
        && let Err(e) = half.send.write_first(&mut [preamble]).await
    {
        report_write_error(&core, slot, e);
        return;
    }
    let Some(wake) = core.lock().subs.get(slot).map(|s| s.wake.clone()) else { return };
    loop {
        let step = core.lock().writer_step(slot, Instant::now().into_std());
        match step {
            WriterStep::Send(frame) => {
                let written = if half.seal.is_sealed() {
                    let Ok(sealed) = half.seal.seal(frame.chunks().concat().into()) else {
                        core.report(Event::Lost(slot, "cannot seal a frame".into()));
                        return;
                    };
                    half.send.write_data(sealed).await
                } else {
                    half.send.write_data_chunks(&mut frame.chunks()).await
                };
                if let Err(e) = written {
                    report_write_error(&core, slot, e);
                    return;
                }
            }
            WriterStep::Finish => {
                if let Ok(Some(fin)) = half.seal.fin()
                    && let Err(e) = half.send.write_data(fin).await
                {
                    report_write_error(&core, slot, e);
                    return;
                }
                if half.send.finish().is_ok() {
                    half.finished = true;
                    let _ = tokio::time::timeout(linger, half.send.stopped()).await;
                }
                return;
            }
            WriterStep::Stop => return,
            WriterStep::Wait(until) => match until {
                Some(at) => {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep_until(Instant::from_std(at)) => {}
                    }
                }
                None => wake.notified().await,
            },
        }
    }
}

fn report_write_error(core: &FlowCore, slot: usize, e: WriteError) {
    match e {
        WriteError::Stopped(code) if codes_for_flow(code) => core.report(Event::FlowReset(code.into_inner())),
        // A refusing node stops our upload, then replies: the reader reports why.
        WriteError::Stopped(code) if code == codes::REFUSED => {}
        other => core.report(Event::Lost(slot, format!("write: {other}"))),
    }
}

/// Reads `slot`'s frames: first the reply when `reply` says this end opened the subflow
/// (with the time allowed and when it was opened), then `leading` bytes (read behind an
/// inbound header), then the stream.
pub(crate) async fn read_loop(
    core: Arc<FlowCore>,
    slot: usize,
    mut half: RecvHalf,
    mut leading: Bytes,
    reply: Option<(Duration, Instant)>,
) {
    if let Some((limit, opened_at)) = reply {
        match tokio::time::timeout(limit, read_reply(&mut half.recv, &mut half.seal, &half.up)).await {
            Ok(Ok(rest)) => {
                leading = rest;
                core.report(Event::Opened(slot, opened_at.elapsed()));
            }
            Ok(Err(FlowEnd::PeerReset(code))) if code == FLOW_RESET.into_inner() => {
                half.ended = true;
                core.report(Event::FlowReset(code));
                return;
            }
            Ok(Err(FlowEnd::Refused { reason, hop, detail })) => {
                half.ended = true;
                core.report(Event::Refused { slot, reason, hop, detail });
                return;
            }
            Ok(Err(other)) => {
                core.report(Event::Lost(slot, format!("reply: {other:?}")));
                return;
            }
            Err(_) => {
                core.report(Event::Lost(slot, "no reply in time".into()));
                return;
            }
        }
    }
    let mut decoder = FrameDecoder::new();
    let mut plain = Vec::new();
    if let Err(e) = half.seal.open(leading, &mut plain) {
        core.report(Event::Violation(format!("{e:?}")));
        return;
    }
    plain.drain(..).for_each(|p| decoder.feed(&p));
    let mut saw_fin = false;
    loop {
        match core.take_frames(slot, &mut decoder) {
            Ok(fin) => saw_fin |= fin,
            Err(detail) => {
                core.report(Event::Violation(detail));
                return;
            }
        }
        match half.recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                if let Err(e) = half.seal.open(chunk.bytes, &mut plain) {
                    core.report(Event::Violation(format!("{e:?}")));
                    return;
                }
                plain.drain(..).for_each(|p| decoder.feed(&p));
            }
            Ok(None) => {
                half.ended = true;
                if half.seal.end().is_err() {
                    core.report(Event::Violation("sealed subflow cut short".into()));
                } else if decoder.buffered() > 0 {
                    core.report(Event::Violation("subflow ended inside a frame".into()));
                } else if saw_fin {
                    core.report(Event::PeerFinished);
                } else {
                    // A completing peer sends `Fin` on every subflow before finishing it;
                    // any other clean end (a dropped stream) is no completion.
                    core.report(Event::Lost(slot, "finished without completing the flow".into()));
                }
                return;
            }
            Err(ReadError::Reset(code)) if codes_for_flow(code) => {
                half.ended = true;
                core.report(Event::FlowReset(code.into_inner()));
                return;
            }
            Err(e) => {
                core.report(Event::Lost(slot, format!("read: {e}")));
                return;
            }
        }
    }
}
