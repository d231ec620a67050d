//! `proxy`: an overlay mesh for TCP. Local applications connect over plain TCP to a node;
//! nodes carry each flow as a stream on persistent, mutually authenticated QUIC links.
//!
//! Layout: [`core`] is pure logic (wire codecs, routing, backoff, policy) with no I/O;
//! [`node`] is the tokio shell that owns sockets and tasks; [`config`], [`tls`] and
//! [`pki`] load and make what a node needs; [`join`] enrolls a machine (`proxy mesh join`); [`logging`] writes the node's and the
//! scheduler's logs; [`admin`] is the admin HTTP API; [`cli`] is the command line.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod admin;
pub mod atomic_file;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod demo;
pub mod emulator;
pub mod fuzzing;
pub mod join;
pub mod logging;
pub mod node;
pub mod pki;
pub mod prometheus;
pub mod quic;
pub mod scheduler;
pub mod shutdown;
pub mod text_table;
pub mod tls;

pub use node::Node;
