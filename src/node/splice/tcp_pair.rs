//! A flow whose exit is this node: plain TCP to TCP, with the same guarantees as a mesh
//! flow (half-close both ways, resets passed on, idle and half-closed timeouts, forced
//! shutdown, no buffer held while idle).

use std::io;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use crate::node::flow::timer::Activity;
use crate::node::observe::stats::Counters;
use crate::node::splice::tcp_io;
use crate::node::splice::{FlowEnd, FlowEnv};

/// Copies between `client` and `upstream` until both directions finish; resets both on
/// any failure.
pub(crate) async fn splice_tcp(client: TcpStream, upstream: TcpStream, env: FlowEnv) -> FlowEnd {
    let FlowEnv { timeouts, counters, mut force, route, bytes, .. } = env;
    tcp_io::arm_reset_on_drop(&client);
    tcp_io::arm_reset_on_drop(&upstream);
    let activity = Activity::counting(bytes);
    let end = {
        let up = copy(&client, &upstream, &activity, &counters);
        let down = copy(&upstream, &client, &activity, &counters);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) => FlowEnd::Completed,
                Err(end) => end,
            },
            reason = activity.watchdog(&timeouts) => FlowEnd::TimedOut(reason),
            _ = tcp_io::error_reported(&client) => FlowEnd::TcpReset,
            _ = tcp_io::error_reported(&upstream) => FlowEnd::TcpReset,
            _ = crate::shutdown::wait_true(&mut force) => FlowEnd::Aborted,
        }
    };
    if let Some(route) = route {
        route.bytes.fetch_add(activity.bytes(), std::sync::atomic::Ordering::Relaxed);
    }
    if end == FlowEnd::Completed {
        tcp_io::disarm_reset_on_drop(&client);
        tcp_io::disarm_reset_on_drop(&upstream);
    }
    end
}

/// Read buffer per direction; local exits are not on the mesh's bulk path.
const CHUNK: usize = 64 * 1024;

async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity,
    counters: &Counters,
) -> Result<(), FlowEnd> {
    loop {
        from.readable().await.map_err(|_| FlowEnd::TcpReset)?;
        let mut buf = Vec::with_capacity(CHUNK);
        loop {
            match from.try_read_buf(&mut buf) {
                Ok(0) => {
                    activity.half_close();
                    return tcp_io::shutdown_write(to);
                }
                Ok(n) => {
                    activity.moved(n as u64);
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    tcp_io::write_all(to, &buf, activity, counters).await?;
                    buf.clear();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(FlowEnd::TcpReset),
            }
        }
    }
}
