//! The scheduler: a QUIC endpoint nodes register with and report to, and the loop that
//! turns their measurements into instructions. [`state`] holds the decisions (no I/O);
//! [`server`] carries the protocol.

pub mod server;
pub mod state;

pub use server::Scheduler;
