//! Shutdown as every long-running task sees it: a `watch` flag that turns true once.

use tokio::sync::watch;

/// Waits until a shutdown flag turns true (or its sender is gone).
pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
