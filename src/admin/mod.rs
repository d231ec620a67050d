//! The admin API's HTTP layer, shared by the node and the scheduler: health, status,
//! metrics and the web console, for people, scrapers and `proxy status`. Each serves its
//! own routes (`node::admin_api`, `scheduler::admin`) through it.
//!
//! The server is hyper's HTTP/1.1 with this crate's limits and access rules around it
//! ([`http::serve`]): the Host header against DNS rebinding, the bearer token, the
//! console's login cookie and CSRF token; the bind rule that keeps a token-less API on
//! loopback is `config::admin_bind`.
//!
//! Layout: `request` and `response` are what handlers see; `access` and `session` decide
//! who is served (pure); `conn_io` and `body` adapt the socket and the answers to hyper;
//! `assets` embeds the console; `http` is the server; `client` is the client `proxy
//! status` uses. `http` re-exports what the others make public.

mod access;
pub mod assets;
mod body;
mod client;
mod conn_io;
pub mod http;
mod request;
mod response;
mod session;
pub mod status;
pub mod status_json;
