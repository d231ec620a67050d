//! A proxy-chain node's half of a sealed flow: it is the exit of the leg that reached it
//! and the origin of the next one, so it opens what one seal carries and seals it again
//! for the other, both ways. The origin's early bytes go on at once (the first leg's keys
//! are made before the reply); the first leg's reply waits for the next leg's, and passes
//! its refusal back (sealed, with the refusing hop) or says `Opened`.
//!
//! Invariants as for the other splices: a sealed finish crosses as a sealed finish, any
//! failure resets both legs, and each direction holds at most one chunk of its own.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use quinn::RecvStream;

use crate::core::wire::Reply;
use crate::node::flow::seal::PendingReply;
use crate::node::flow::timer::Activity;
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::{DownSeal, FlowSeal, UpSeal};
use crate::node::splice::tcp_stream::read_reply;
use crate::node::splice::{FlowEnd, FlowEnv, codes, read_error, settle_between, write_error};

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// One sealed leg: its streams and its seal.
pub(crate) struct Leg {
    /// Towards the neighbour.
    pub send: LinkSend,
    /// From the neighbour.
    pub recv: RecvStream,
    /// The leg's seal: `Exit` for the leg behind, `Origin` for the one ahead.
    pub seal: FlowSeal,
}

/// Splices the leg `back` (whose origin's early bytes `rest` came behind its header, and
/// whose reply is `reply`) with the leg `ahead`, until both directions finish.
pub(crate) async fn splice_resealed(
    mut back: Leg,
    rest: Bytes,
    reply: PendingReply,
    mut ahead: Leg,
    env: FlowEnv,
) -> FlowEnd {
    let FlowEnv { timeouts, counters, mut force, route, bytes, .. } = env;
    let activity = Activity::counting(bytes);
    let (back_up, mut back_down) = std::mem::replace(&mut back.seal, FlowSeal::Plain).split();
    let (ahead_up, mut ahead_down) = std::mem::replace(&mut ahead.seal, FlowSeal::Plain).split();
    let refused = AtomicBool::new(false);
    let refused_note = tokio::sync::Notify::new();
    let end = {
        let forward = async {
            let copy = async {
                let mut plain = Vec::new();
                back_down.open(rest, &mut plain)?;
                send_plain(&mut ahead.send, &ahead_up, &mut plain, &activity).await?;
                pump(&mut back.recv, &mut back_down, (&mut ahead.send, &ahead_up), &activity).await
            };
            // A refusal ahead ends this direction: nothing more goes that way.
            tokio::select! {
                r = copy => r,
                _ = refused_note.notified() => Ok(()),
            }
        };
        let backward = async {
            let answer =
                tokio::time::timeout(timeouts.reply, read_reply(&mut ahead.recv, &mut ahead_down, &ahead_up))
                    .await
                    .map_err(|_| FlowEnd::TimedOut("reply"));
            let (answer, first) = match answer? {
                Ok(first) => (Reply::Opened, Some(first)),
                Err(FlowEnd::Refused { reason, hop, detail }) => (Reply::refused(reason, &hop, detail), None),
                Err(other) => return Err(other),
            };
            let sealed = reply.seal(&answer).map_err(FlowEnd::Protocol)?;
            back.send.write_first(&mut [sealed]).await.map_err(write_error)?;
            let Some(first) = first else {
                // The refusal went back sealed; this leg ends like a refused stream.
                refused.store(true, Ordering::Relaxed);
                refused_note.notify_one();
                back.send.finish().map_err(|_| FlowEnd::PeerReset(codes::PEER_RESET.into_inner()))?;
                return Ok(());
            };
            let mut plain = Vec::new();
            ahead_down.open(first, &mut plain)?;
            send_plain(&mut back.send, &back_up, &mut plain, &activity).await?;
            pump(&mut ahead.recv, &mut ahead_down, (&mut back.send, &back_up), &activity).await
        };
        tokio::select! {
            r = async { tokio::try_join!(forward, backward) } => match r {
                Ok(_) if refused.load(Ordering::Relaxed) => FlowEnd::RefusedAhead,
                Ok(_) => FlowEnd::Completed,
                Err(end) => end,
            },
            reason = activity.watchdog(&timeouts) => FlowEnd::TimedOut(reason),
            _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
        }
    };
    if end == FlowEnd::RefusedAhead {
        // The next leg is over; the origin stops sending once the refusal reaches it.
        let _ = back.recv.stop(codes::REFUSED);
        let _ = ahead.send.reset(codes::REFUSED);
    }
    let end = settle_between(end, (&back.send, &ahead.send), &activity, timeouts, force.clone()).await;
    if let Some(route) = route {
        route.bytes.fetch_add(activity.bytes(), Ordering::Relaxed);
    }
    counters.bytes_relayed.fetch_add(activity.bytes(), Ordering::Relaxed);
    if !matches!(end, FlowEnd::Completed | FlowEnd::RefusedAhead) {
        let code = end.reset_code();
        for (send, recv) in [(&mut back.send, &mut back.recv), (&mut ahead.send, &mut ahead.recv)] {
            let _ = send.reset(code);
            let _ = recv.stop(code);
        }
    }
    end
}

/// Seals and sends the plaintext pieces in `plain` (emptied).
async fn send_plain(
    to: &mut LinkSend,
    seal: &UpSeal,
    plain: &mut Vec<Bytes>,
    activity: &Activity,
) -> Result<(), FlowEnd> {
    for piece in plain.drain(..) {
        activity.moved(piece.len() as u64);
        to.write_data_moving(seal.seal(piece)?, Some(activity)).await.map_err(write_error)?;
    }
    Ok(())
}

/// Copies one direction, opening and sealing again, until its sealed end.
async fn pump(
    from: &mut RecvStream,
    opener: &mut DownSeal,
    (to, sealer): (&mut LinkSend, &UpSeal),
    activity: &Activity,
) -> Result<(), FlowEnd> {
    let mut plain = Vec::new();
    loop {
        match from.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => {
                opener.open(chunk.bytes, &mut plain)?;
                match send_plain(to, sealer, &mut plain, activity).await {
                    // The next leg refused: its reply is on the way back.
                    Err(FlowEnd::PeerReset(code)) if code == codes::REFUSED.into_inner() => {
                        std::future::pending::<()>().await;
                    }
                    other => other?,
                }
            }
            Ok(None) => {
                opener.end()?;
                if let Some(fin) = sealer.fin()? {
                    to.write_data_moving(fin, Some(activity)).await.map_err(write_error)?;
                }
                activity.half_close();
                return to
                    .finish_delivering(activity)
                    .map_err(|_| FlowEnd::PeerReset(codes::PEER_RESET.into_inner()));
            }
            Err(e) => return Err(read_error(e)),
        }
    }
}
