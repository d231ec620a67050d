//! Listeners: TCP ones accept application connections and hand each to the origin; UDP
//! ones are served by [`crate::node::flow::udp_origin`]. [`Bound`] is either, bound.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

use crate::config::ListenerProtocol;
use crate::node::{Shared, flow::origin};

/// Accept queue length: a burst of connections must queue in the kernel rather than
/// overflow it, which with SYN cookies ends in resets the node never sees.
const BACKLOG: u32 = 4096;

/// A listener's bound socket.
pub(crate) enum Bound {
    /// `protocol: tcp`.
    Tcp(TcpListener),
    /// `protocol: udp`.
    Udp(tokio::net::UdpSocket),
}

impl Bound {
    /// Binds `listener`'s socket for its protocol.
    pub(crate) fn bind(listener: &crate::config::ListenerConfig) -> std::io::Result<Self> {
        match listener.protocol {
            ListenerProtocol::Tcp => bind(listener.bind).map(Self::Tcp),
            ListenerProtocol::Udp => crate::node::flow::udp_origin::bind(listener.bind).map(Self::Udp),
        }
    }

    /// The address it is bound to.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr(),
            Self::Udp(s) => s.local_addr(),
        }
    }

    /// Serves it until the node starts draining.
    pub(crate) async fn serve(self, shared: Arc<Shared>, name: String) {
        match self {
            Self::Tcp(l) => accept_loop(shared, name, l).await,
            Self::Udp(s) => crate::node::flow::udp_origin::serve(shared, name, s).await,
        }
    }
}

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
