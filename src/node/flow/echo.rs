//! The exit of a probe flow (`Destination::Echo`, sent by `proxy ping` and `proxy trace`):
//! this node answers `Opened` itself and echoes every byte the origin sends, sealed when
//! the flow is sealed. Nothing is dialed and the exit policy is not involved: an echo
//! reaches no one but this node.
//!
//! A member could open probe flows just to make this node work, so each is held small:
//! at most [`MAX_ECHO_FLOWS`] at once on this node (more are refused `overloaded`), at
//! most [`ECHO_MAX_BYTES`] received per flow and at most [`ECHO_LIFETIME`] per flow (past
//! either, the flow is reset). Every echo is no larger than what came in, so a probe
//! never amplifies traffic.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quinn::RecvStream;
use tracing::{debug, info};

use crate::core::wire::RefuseReason;
use crate::node::flow::exit::send_opened;
use crate::node::flow::inbound::refuse_exit;
use crate::node::flow::seal::ExitSeal;
use crate::node::link::send::LinkSend;
use crate::node::splice::sealing::FlowSeal;
use crate::node::splice::{FlowEnd, read_error, write_error};
use crate::node::{FlowGuard, Shared};

/// Probe flows this node answers at once.
pub(crate) const MAX_ECHO_FLOWS: usize = 16;
/// Bytes one probe flow may send this node, as they come off the stream (records and
/// all): 50 probes of 16 bytes, sealed, take under 2 KiB.
pub(crate) const ECHO_MAX_BYTES: usize = 8 * 1024;
/// How long one probe flow may last.
pub(crate) const ECHO_LIFETIME: Duration = Duration::from_secs(60);
/// Largest read from the stream at once.
const READ_CHUNK: usize = 1024;

/// Answers one probe flow that exits here.
pub(crate) async fn answer(
    shared: Arc<Shared>,
    guard: FlowGuard,
    rest: Bytes,
    (mut send, mut recv): (LinkSend, RecvStream),
    seal: Option<ExitSeal>,
) {
    let Ok(_permit) = shared.echo_permits.clone().try_acquire_owned() else {
        let detail = format!("{MAX_ECHO_FLOWS} probe flows are being answered already");
        refuse_exit(&shared, (&mut send, &mut recv), seal, RefuseReason::Overloaded, &detail).await;
        return;
    };
    let seal = match send_opened(&shared, &mut send, seal).await {
        Ok(seal) => seal,
        Err((code, end)) => {
            let _ = send.reset(code);
            let _ = recv.stop(code);
            guard.finish(&end);
            return;
        }
    };
    shared.counters.probes_answered.fetch_add(1, Ordering::Relaxed);
    let mut force = shared.force.clone();
    let end = tokio::select! {
        r = echo(&mut send, &mut recv, seal, rest) => r.err().unwrap_or(FlowEnd::Completed),
        _ = tokio::time::sleep(ECHO_LIFETIME) => FlowEnd::TimedOut("probe lifetime"),
        _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
    };
    match &end {
        FlowEnd::Completed => debug!("probe flow answered"),
        other => {
            info!(end = ?other, "probe flow closed");
            let _ = send.reset(other.reset_code());
            let _ = recv.stop(other.reset_code());
        }
    }
    guard.finish(&end);
}

/// Echoes what arrives until the origin's clean end, then ends this direction the same
/// way; an error past [`ECHO_MAX_BYTES`] or on a broken stream.
async fn echo(
    send: &mut LinkSend,
    recv: &mut RecvStream,
    seal: FlowSeal,
    rest: Bytes,
) -> Result<(), FlowEnd> {
    let (up, mut down) = seal.split();
    let mut received = 0usize;
    let mut plain = Vec::new();
    let mut next = Some(rest);
    loop {
        let chunk = match next.take() {
            Some(bytes) => bytes,
            None => match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => {
                    down.end()?;
                    if let Some(fin) = up.fin()? {
                        send.write_data(fin).await.map_err(write_error)?;
                    }
                    return send.finish().map_err(|_| FlowEnd::PeerReset(0));
                }
                Err(e) => return Err(read_error(e)),
            },
        };
        received += chunk.len();
        if received > ECHO_MAX_BYTES {
            return Err(FlowEnd::Protocol(format!("probe flow sent over {ECHO_MAX_BYTES} bytes")));
        }
        down.open(chunk, &mut plain)?;
        for data in plain.drain(..) {
            send.write_data(up.seal(data)?).await.map_err(write_error)?;
        }
    }
}
