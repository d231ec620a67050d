//! The integration tests: real nodes, schedulers and processes on loopback (or in network
//! namespaces the tests make), one module per area. One test binary, not one per file: the
//! shared helpers (`common`) are compiled and the crate linked once, which saves minutes of
//! CI on two cores. Run one area with `cargo test --test integration probe::`.

// First, so its macros (`over_both_transports!`) are in scope in every module below.
#[macro_use]
mod common;

mod admin;
mod admin_http;
mod attacks;
mod browser_harness;
mod busy_link;
mod cli;
mod cli_conveniences;
mod config_check;
mod configs;
mod console_browser;
mod console_live;
mod data_plane;
mod demo;
mod emulator;
mod enroll;
mod fuzz_corpus;
mod hostile_process;
mod hostile_streams;
mod instructions;
mod isolation;
mod kill_restart;
mod lifecycle;
mod link_fallback;
mod lossy_link;
mod mesh_admin;
mod multi_hop;
mod multipath;
mod multipath_hostile;
mod operator_reload;
mod partial_mesh;
mod peer_links;
mod probe;
mod progress_timeouts;
mod reload;
mod scheduler;
mod scheduler_admin;
mod scheduler_ha;
mod sealed_flows;
mod systemd;
mod udp_blocked_netns;
mod udp_flows;
