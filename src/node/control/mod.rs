//! What the node takes from outside while it runs: the scheduler's instructions and
//! introductions ([`scheduler_client`]), the instruction cache kept on disk so routing
//! survives a scheduler outage and a restart ([`instruction_store`]), and config reloads
//! on SIGHUP or the admin API ([`reload`]).

pub mod instruction_store;
pub(crate) mod reload;
pub(crate) mod scheduler_client;
