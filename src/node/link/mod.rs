//! Peer links: the QUIC connections between nodes, and what each one carries besides
//! flows.
//!
//! - [`endpoint`]: the transport every link negotiates (windows, controller), on the
//!   endpoint `crate::quic` builds;
//! - [`connect`]: keeps links up: a dial loop per peer with an address, the accept loop,
//!   link health;
//! - [`peers`]: the pool of live links, one per peer, and which of two duplicate
//!   connections stays;
//! - [`identity`], [`renewal`]: the certificate links present, and its renewal in place;
//! - [`congestion`]: the controller each link runs (`mesh.congestion`);
//! - [`credit`]: how much a link may buffer for its flows (the window that follows the
//!   path, the node-wide budget, stalled flows kept out of the shared credit);
//! - [`send`]: a flow's send side on a link, taking fair turns at the link's send buffer;
//! - [`delivery`]: whether a link is still delivering (progress for flow timeouts);
//! - [`tcp`], [`stream_socket`]: links over TLS on TCP, the same QUIC connection with its
//!   packets inside a TCP stream, for where UDP is blocked.

pub(crate) mod cards;
pub(crate) mod congestion;
pub(crate) mod connect;
pub(crate) mod credit;
pub(crate) mod delivery;
pub(crate) mod endpoint;
pub(crate) mod identity;
pub(crate) mod peers;
pub(crate) mod renewal;
pub(crate) mod send;
pub(crate) mod stream_socket;
pub(crate) mod tcp;
