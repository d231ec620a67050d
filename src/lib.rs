//! `proxy`: an overlay mesh for TCP. Local applications connect over plain TCP to a node;
//! nodes carry each flow as a stream on persistent, mutually authenticated QUIC links.
//!
//! # The library
//!
//! What an embedder uses, each with an example on its item:
//! - [`config::load`] / [`config::parse`]: a node's config, every problem reported with
//!   its key and line; [`config::scheduler`] for the scheduler's;
//! - [`Node`]: start a node, and through [`NodeView`] read its peers, routes, flows and
//!   stats, reload its config, shut it down;
//! - [`Scheduler`]: run the scheduler in-process;
//! - [`pki`] and [`join`]: make a mesh CA and node certificates, or enroll a machine;
//! - [`LinkEmulator`]: a user-space link with delay, loss and a rate limit between two
//!   sockets, for trying the mesh across "regions" on one machine.
//!
//! [`core`] holds the wire and control codecs and the pure algorithms (path choice,
//! hysteresis, the congestion model): public for tools that speak the protocol
//! (`docs/wire.md`, `docs/scheduler-protocol.md`), but not the embedding API. Everything
//! else is the crate's own: `docs/architecture.md` maps it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod admin;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod console;
pub mod core;
pub mod demo;
pub mod emulator;
#[doc(hidden)]
pub mod fuzzing;
pub mod join;
pub(crate) mod key_file;
pub(crate) mod logging;
pub mod node;
pub mod pki;
pub(crate) mod prometheus;
#[doc(hidden)]
pub mod quic;
pub mod scheduler;
pub(crate) mod service_notify;
pub(crate) mod shutdown;
pub(crate) mod state_file;
pub(crate) mod text_table;
pub mod tls;

pub use config::Config;
pub use emulator::{LinkEmulator, LinkProfile};
pub use node::{Node, NodeView};
pub use scheduler::Scheduler;
