//! The admin API's HTTP layer, shared by the node and the scheduler: health, status and
//! metrics for people, scrapers and `proxy status`. Each serves its own routes
//! (`node::admin_api`, `scheduler::admin`) through it.
//!
//! Everything is in [`http`]: the server ([`http::serve`]), its access rules (Host header
//! against DNS rebinding, bearer token; the bind rule that keeps a token-less API on
//! loopback is `config::admin_bind`), and the client. It is written on tokio alone: the API is a handful of GET
//! routes, one request per connection, and a small server whose every limit is visible
//! here is easier to keep safe than a general one.
//!
//! Layout: `request` parses request heads and `response` encodes answers (both pure);
//! `access` decides who is served (pure); `http` is the socket shell; `client` is the
//! client. `http` re-exports what the others make public.

mod access;
mod client;
pub mod http;
mod request;
mod response;
pub mod status;
