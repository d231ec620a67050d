//! What a node shows of itself: counters ([`stats`]), the open flows ([`flow_registry`]),
//! routes with their chosen paths ([`route_view`]), and the Prometheus rendering of all of
//! it ([`metrics`]). The admin API serves these as JSON, `/metrics` as text.

pub(crate) mod flow_registry;
pub(crate) mod metrics;
pub(crate) mod path_outcomes;
pub(crate) mod route_view;
pub(crate) mod stats;
pub(crate) mod udp;
