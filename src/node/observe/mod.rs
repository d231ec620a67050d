//! What a node shows of itself: counters ([`stats`]), the open flows ([`flow_registry`]),
//! routes with their chosen paths ([`route_view`]), and the Prometheus rendering of all of
//! it ([`metrics`]). The admin API serves these as JSON, `/metrics` as text.

pub mod flow_registry;
pub mod metrics;
pub mod route_view;
pub mod stats;
