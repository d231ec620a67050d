//! The core: pure logic with no I/O, no tokio and no quinn. It takes inputs (bytes, the
//! time, random numbers) and returns decisions; the `node` shell carries them out.

pub mod backoff;
pub mod congestion;
pub mod control;
pub mod datagram;
pub mod enroll;
pub mod hysteresis;
pub mod instructions;
pub mod join_token;
pub mod link_health;
pub mod link_rule;
pub mod multipath;
pub mod pathfind;
pub mod policy;
pub mod route;
pub mod seal;
pub mod subflow_frame;
pub mod subflow_meter;
pub mod wire;
