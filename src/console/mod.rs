//! The web console's data: what the page shows, the events kept for it, the history
//! behind its charts, and the live stream that pushes changes (Server-Sent Events).
//!
//! The node and the scheduler each turn their state into a [`model::ConsoleState`]
//! (`node::console`, `scheduler::console`); everything from there on is shared: the
//! [`live::Console`] samples that state, derives events from what changed, keeps an hour
//! of history, and serves the console's JSON and live routes. The page itself is in
//! `assets/`, embedded and served by `admin::assets`.

pub mod events;
pub mod history;
pub mod live;
pub mod model;
pub mod rate;
