//! How a flow travels through a node. Each node plays one of four parts:
//!
//! ```text
//! origin:  listener -> origin -> onward (opens a stream on the first link) -> splice::tcp_stream
//!          (or, when this node is the exit: origin -> splice::tcp_pair)
//! relay:   link -> inbound (reads the header) -> relay -> onward -> splice::streams
//! exit:    link -> inbound -> exit (checks the policy, dials the target) -> splice::tcp_stream
//! ```
//!
//! Multipath flows take the same entrances and continue in `node::multipath`.
//!
//! - [`listener`]: listeners, one per configured listener (TCP accept loops; UDP ones
//!   are served by [`udp_origin`]);
//! - [`origin`]: the node where a flow enters: route, path, header, first bytes;
//! - [`onward`]: opens the stream to the next node and reads its answer;
//! - [`inbound`]: the stream server of each link: reads a flow's header, checks who sent
//!   it, hands it to relay or exit;
//! - [`relay`], [`exit`]: the two ends a header can ask of this node;
//! - [`echo`]: the exit of a probe flow (`proxy ping`, `proxy trace`), answered here;
//! - [`timer`]: when a flow last made progress, and its idle and half-closed timeouts;
//! - [`udp_origin`], [`udp_exit`]: UDP associations, each carried as one flow of framed
//!   datagrams (`splice::udp_stream`).

pub(crate) mod echo;
pub(crate) mod exit;
pub(crate) mod inbound;
pub(crate) mod listener;
pub(crate) mod onward;
pub(crate) mod origin;
pub(crate) mod own_addresses;
pub(crate) mod relay;
pub(crate) mod resolve;
pub(crate) mod seal;
pub(crate) mod timer;
pub(crate) mod udp_exit;
pub(crate) mod udp_origin;
