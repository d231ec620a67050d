//! TCP listeners: accept application connections and hand each to the origin.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

use crate::node::{Shared, flow::origin};

/// Accept queue length: a burst of connections must queue in the kernel rather than
/// overflow it, which with SYN cookies ends in resets the node never sees.
const BACKLOG: u32 = 4096;

/// Binds a listener with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts on `listener` until the node starts draining.
pub(crate) async fn accept_loop(shared: Arc<Shared>, name: String, listener: TcpListener) {
    let mut draining = shared.draining.clone();
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    tokio::spawn(origin::handle_connection(shared.clone(), name.clone(), port, tcp));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::shutdown::wait_true(&mut draining) => return,
        }
    }
}
