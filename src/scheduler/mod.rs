//! The scheduler: a QUIC endpoint nodes register with and report to, and the loop that
//! turns their measurements into instructions. [`state`] holds the decisions (no I/O);
//! [`server`] carries the protocol; [`admin`] is its admin API (nodes, links, routes,
//! metrics), served like the node's by [`crate::admin::http`]. With `state.etcd`, [`etcd`]
//! shares the registry between several schedulers and elects the one that leads.

pub mod admin;
mod console;
pub mod enrollment;
pub mod etcd;
pub mod join_session;
pub mod presence;
pub mod reload;
pub mod server;
pub mod state;

pub use server::{Scheduler, SchedulerView};
