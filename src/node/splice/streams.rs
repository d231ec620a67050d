//! A relay's half of a flow: bytes move between the stream from the previous node and
//! the stream to the next one, both ways, without being looked at.
//!
//! Invariants (as for [`crate::node::splice`]):
//! - a finish crosses as a finish; a reset or stop on either side resets and stops both
//!   sides, so a cut anywhere on the path reaches both ends as a reset;
//! - the one exception is a refusal: the next node stops our upload with `REFUSED` and then
//!   sends its reply, so the upload is stopped upstream too while the reply still passes;
//! - a relay holds at most one chunk per direction of its own; everything else waits in
//!   QUIC flow control, so a slow exit slows the origin and relay memory stays bounded.

use std::sync::atomic::{AtomicBool, Ordering};

use quinn::{RecvStream, VarInt, WriteError};

use crate::node::flow::timer::Activity;
use crate::node::link::credit::StallWatch;
use crate::node::link::send::LinkSend;
use crate::node::observe::stats::Counters;
use crate::node::splice::relay_tap::{RelayTap, TapAction, TapDirection};
use crate::node::splice::{FlowEnd, FlowEnv, codes, read_error, settle_between, write_error};

/// Largest chunk moved in one step.
const CHUNK: usize = 64 * 1024;
/// The longest reply (see `wire::encode_reply`).
const REPLY_MAX: usize = crate::core::wire::REPLY_PREFIX_LEN + crate::core::wire::MAX_REPLY_BODY;

/// One side of a relayed flow: the streams to and from one neighbour.
pub(crate) struct StreamPair {
    /// Towards the neighbour.
    pub send: LinkSend,
    /// From the neighbour.
    pub recv: RecvStream,
}

/// Relays between the previous node (`back`) and the next (`ahead`) until both directions
/// finish, or resets both on any failure.
pub(crate) async fn splice_streams(mut back: StreamPair, mut ahead: StreamPair, env: FlowEnv) -> FlowEnd {
    let FlowEnv { timeouts, counters, mut force, bytes, route, tap, .. } = env;
    let activity = Activity::counting(bytes);
    let refused_ahead = AtomicBool::new(false);
    let end = {
        let (back_watch, ahead_watch) = (back.send.stall_watch(), ahead.send.stall_watch());
        let forward = copy(
            (&mut back.recv, back_watch),
            &mut ahead.send,
            (&activity, &counters, tap.as_ref()),
            Direction::Forward(&refused_ahead),
        );
        let backward = copy(
            (&mut ahead.recv, ahead_watch),
            &mut back.send,
            (&activity, &counters, tap.as_ref()),
            Direction::Backward,
        );
        tokio::select! {
            r = async { tokio::try_join!(forward, backward) } => match r {
                Ok(_) if refused_ahead.load(Ordering::Relaxed) => FlowEnd::RefusedAhead,
                Ok(_) => FlowEnd::Completed,
                Err(end) => end,
            },
            reason = activity.watchdog(&timeouts) => FlowEnd::TimedOut(reason),
            _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
        }
    };
    let end = settle_between(end, (&back.send, &ahead.send), &activity, timeouts, force.clone()).await;
    // A proxy-chain node counts the flow on its own route.
    if let Some(route) = route {
        route.bytes.fetch_add(activity.bytes(), Ordering::Relaxed);
    }
    if !matches!(end, FlowEnd::Completed | FlowEnd::RefusedAhead) {
        // A neighbour's reset code passes on unchanged, so the ends can tell a multipath
        // flow's own reset from the loss of one of its paths.
        let code = match &end {
            FlowEnd::TimedOut(_) => codes::TIMEOUT,
            FlowEnd::Aborted => codes::SHUTDOWN,
            FlowEnd::PeerReset(code) => VarInt::from_u64(*code).unwrap_or(codes::PEER_RESET),
            _ => codes::PEER_RESET,
        };
        for side in [&mut back, &mut ahead] {
            let _ = side.send.reset(code);
            let _ = side.recv.stop(code);
        }
    }
    end
}

/// Which way a relay copies.
enum Direction<'a> {
    /// Towards the exit; set to true when the next node refused the flow.
    Forward(&'a AtomicBool),
    /// Towards the origin: the first bytes are the reply, so they go as an opening.
    Backward,
}

/// Copies one direction; a finish is passed on as a finish. Only the forward direction
/// takes a stop with `REFUSED` from ahead as a refusal whose reply is on its way back.
async fn copy(
    (from, mut watch): (&mut RecvStream, StallWatch),
    to: &mut LinkSend,
    (activity, counters, tap): (&Activity, &Counters, Option<&RelayTap>),
    direction: Direction<'_>,
) -> Result<(), FlowEnd> {
    let (mut opening, refused, side) = match direction {
        Direction::Forward(refused) => (false, Some(refused), TapDirection::Forward),
        Direction::Backward => (true, None, TapDirection::Backward),
    };
    loop {
        match watch.read(from.read_chunk(CHUNK, true)).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len() as u64;
                activity.moved(n);
                let chunks = match tap {
                    None => vec![chunk.bytes],
                    Some(tap) => match tap(side, chunk.bytes) {
                        TapAction::Send(chunks) => chunks,
                        TapAction::Finish => {
                            activity.half_close();
                            return to.finish_delivering(activity).map_err(|_| FlowEnd::PeerReset(0));
                        }
                    },
                };
                let write = async {
                    for bytes in chunks {
                        if std::mem::take(&mut opening) {
                            // Only what can be the reply goes ahead; data behind it waits its turn.
                            let mut rest = bytes;
                            let reply = rest.split_to(rest.len().min(REPLY_MAX));
                            to.write_first(&mut [reply]).await?;
                            to.write_data_moving(rest, Some(activity)).await?;
                        } else {
                            to.write_data_moving(bytes, Some(activity)).await?;
                        }
                    }
                    Ok(())
                };
                // The neighbour ahead not taking bytes stalls this flow on the link behind.
                let written = watch.write(write).await?;
                match written {
                    Ok(()) => {
                        counters.bytes_relayed.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(WriteError::Stopped(code)) if code == codes::REFUSED && refused.is_some() => {
                        refused.into_iter().for_each(|r| r.store(true, Ordering::Relaxed));
                        let _ = from.stop(codes::REFUSED);
                        return Ok(());
                    }
                    Err(e) => return Err(write_error(e)),
                }
            }
            Ok(None) => {
                activity.half_close();
                return to
                    .finish_delivering(activity)
                    .map_err(|_| FlowEnd::PeerReset(codes::PEER_RESET.into_inner()));
            }
            Err(e) => return Err(read_error(e)),
        }
    }
}
