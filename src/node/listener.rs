//! TCP listeners: accept application connections and hand each to the origin.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::warn;

use crate::node::{Shared, origin};

/// Accepts on `listener` until the node starts draining.
pub async fn accept_loop(shared: Arc<Shared>, name: String, listener: TcpListener) {
    let mut draining = shared.draining.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    tokio::spawn(origin::handle_connection(shared.clone(), name.clone(), tcp));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::node::wait_true(&mut draining) => return,
        }
    }
}
