//! The console's engine, shared by the node and the scheduler: it samples the state every
//! [`TICK`], turns what changed into events, keeps the history, and serves
//! `/api/console/state`, `/api/console/history` and the live stream
//! `/api/console/live` (Server-Sent Events).
//!
//! The stream is coalesced by construction: each subscriber waits on a `watch` of the
//! latest state, so however often the mesh changes it gets at most one state per tick, and
//! a slow subscriber skips states instead of queueing them. Each stream holds a channel of
//! [`STREAM_QUEUE`] messages and the server's write deadline closes one that stops
//! reading; at most [`MAX_SUBSCRIBERS`] streams are open at once (503 beyond).

use crate::admin::http::AccessRules;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use super::events::EventLog;
use super::history::{History, INTERVAL, Sample};
use super::model::{ConsoleState, changes};
use crate::admin::http::{Caller, Response};

/// How often the state is sampled for changes.
pub const TICK: Duration = Duration::from_millis(500);
/// Live streams open at once.
pub const MAX_SUBSCRIBERS: usize = 32;
/// Messages queued per stream before the stream waits (and skips states meanwhile).
pub const STREAM_QUEUE: usize = 4;
/// A comment line this often keeps proxies and the browser from timing the stream out,
/// and finds streams whose client left.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Produces the current state (without events); `true` asks for everything the page
/// shows, `false` for what events are derived from (cheaper: no route alternatives).
pub type StateSource = Arc<dyn Fn(bool) -> ConsoleState + Send + Sync>;

/// One console: a node's or the scheduler's.
pub struct Console {
    source: StateSource,
    events: Arc<EventLog>,
    history: Mutex<History>,
    latest: watch::Sender<Option<Arc<Bytes>>>,
    sample: watch::Sender<Option<Arc<Bytes>>>,
    subscribers: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
    /// The admin API's access rules: every live stream ends when they change (a new
    /// token), so a stream opened under the old one does not outlive it.
    access: watch::Receiver<AccessRules>,
}

impl Console {
    /// Starts sampling `source` until `stopped` turns true; events derived from changes
    /// go to `events`, which the caller may also push to. Live streams end when `access`
    /// changes.
    pub fn start(
        source: StateSource,
        events: Arc<EventLog>,
        stopped: watch::Receiver<bool>,
        access: watch::Receiver<AccessRules>,
    ) -> Arc<Console> {
        let console = Arc::new(Console {
            source,
            events,
            history: Mutex::new(History::default()),
            latest: watch::Sender::new(None),
            sample: watch::Sender::new(None),
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            stopped,
            access,
        });
        tokio::spawn(sample_loop(Arc::downgrade(&console), console.stopped.clone()));
        console
    }

    /// The answer to the console's own paths, or `None` for other paths. `caller`'s login,
    /// if it has one, bounds its live stream.
    pub fn answer(&self, path: &str, caller: &Caller) -> Option<Response> {
        match path {
            "/api/console/state" => {
                let mut state = (self.source)(true);
                state.events = self.events.newest_first();
                Some(Response::json(&state))
            }
            "/api/console/history" => {
                Some(Response::json(&self.history.lock().unwrap_or_else(|p| p.into_inner()).view()))
            }
            "/api/console/live" => Some(self.live(caller.session_expiry())),
            _ => None,
        }
    }

    /// The event log.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    fn live(&self, until_unix: Option<u64>) -> Response {
        let Ok(permit) = self.subscribers.clone().try_acquire_owned() else {
            return Response::text(
                503,
                format!("{MAX_SUBSCRIBERS} live streams are open; try again later\n"),
            );
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        // Subscribed before the first state is read, so no state published in between is lost.
        let mut states = self.latest.subscribe();
        let mut samples = self.sample.subscribe();
        samples.mark_unchanged();
        let first = states.borrow_and_update().clone();
        let first = first.unwrap_or_else(|| Arc::new(frame("state", &(self.source)(true))));
        let until = until_unix.map(|t| {
            tokio::time::Instant::now() + Duration::from_secs(t.saturating_sub(crate::clock::unix_now()))
        });
        let mut stream = Subscriber {
            tx,
            states,
            samples,
            until,
            newest_event: self.events.subscribe(),
            events: self.events.clone(),
            seen: 0,
            stopped: self.stopped.clone(),
            access: self.access.clone(),
        };
        stream.access.mark_unchanged();
        tokio::spawn(async move {
            stream.run(first).await;
            drop(permit);
        });
        Response::event_stream(rx)
    }
}

/// One open live stream.
struct Subscriber {
    tx: mpsc::Sender<Bytes>,
    states: watch::Receiver<Option<Arc<Bytes>>>,
    samples: watch::Receiver<Option<Arc<Bytes>>>,
    newest_event: watch::Receiver<u64>,
    events: Arc<EventLog>,
    seen: u64,
    stopped: watch::Receiver<bool>,
    access: watch::Receiver<AccessRules>,
    /// When the caller's login expires, if it is a session.
    until: Option<tokio::time::Instant>,
}

impl Subscriber {
    async fn run(&mut self, first: Arc<Bytes>) {
        // The browser reconnects by itself after a drop; say how soon.
        if self.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err()
            || self.send((*first).clone()).await.is_err()
            || self.send_events().await.is_err()
        {
            return;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        // A session's stream ends when its login does; the page then asks to log in again.
        let forever = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400);
        let until = self.until.unwrap_or(forever);
        loop {
            let message = tokio::select! {
                changed = self.states.changed() => match changed {
                    Ok(()) => self.states.borrow_and_update().clone(),
                    Err(_) => return,
                },
                changed = self.samples.changed() => match changed {
                    Ok(()) => self.samples.borrow_and_update().clone(),
                    Err(_) => return,
                },
                changed = self.newest_event.changed() => match changed {
                    Ok(()) => None,
                    Err(_) => return,
                },
                _ = heartbeat.tick() => Some(Arc::new(Bytes::from_static(b": keep-alive\n\n"))),
                _ = crate::shutdown::wait_true(&mut self.stopped) => return,
                // New rules: the caller reconnects and is checked against them. Rules
                // whose sender is gone can no longer change, so that is no reason to end.
                Ok(()) = self.access.changed() => return,
                () = self.tx.closed() => return,
                () = tokio::time::sleep_until(until) => return,
            };
            let sent = match message {
                Some(message) => self.send((*message).clone()).await,
                None => self.send_events().await,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    async fn send(&self, message: Bytes) -> Result<(), ()> {
        self.tx.send(message).await.map_err(|_| ())
    }

    /// The events after the last one sent, oldest first (all kept ones at first).
    async fn send_events(&mut self) -> Result<(), ()> {
        self.newest_event.mark_unchanged();
        let fresh = self.events.since(self.seen);
        let Some(last) = fresh.last() else { return Ok(()) };
        self.seen = last.seq;
        self.send(frame("events", &fresh)).await
    }
}

/// One Server-Sent Events message: `event: <name>` and the JSON on one `data:` line.
pub(crate) fn frame(name: &str, value: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// Samples the state every [`TICK`] until stopped or the console is dropped: events from
/// changes, the latest state for streams when it changed, a history point every
/// [`INTERVAL`].
async fn sample_loop(console: std::sync::Weak<Console>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_sample = (INTERVAL.as_millis() / TICK.as_millis()).max(1) as u64;
    // The last state, quiet (see `ConsoleState::into_quiet`): what changes are measured from.
    let mut previous: Option<ConsoleState> = None;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown::wait_true(&mut stopped) => return,
        }
        let Some(console) = console.upgrade() else { return };
        // The full state only while someone watches; events need only the cheap one.
        let watched = console.subscribers.available_permits() < MAX_SUBSCRIBERS;
        let state = (console.source)(watched);
        let quiet = state.clone().into_quiet();
        if let Some(old) = &previous {
            for (kind, text) in changes(old, &state) {
                console.events.push(kind, text);
            }
        }
        let changed = previous.as_ref() != Some(&quiet);
        if changed {
            console.latest.send_replace(Some(Arc::new(frame("state", &state))));
        }
        if ticks.is_multiple_of(per_sample) {
            let sample = Sample::of(&state);
            console.history.lock().unwrap_or_else(|p| p.into_inner()).record(&sample);
            console.sample.send_replace(Some(Arc::new(frame("sample", &sample))));
        }
        ticks += 1;
        previous = Some(quiet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(_: bool) -> ConsoleState {
        ConsoleState {
            kind: "node",
            self_id: None,
            generated_at_ms: 0,
            actions: false,
            nodes: vec![],
            links: vec![],
            routes: vec![],
            flows: vec![],
            events: vec![],
        }
    }

    fn no_rules() -> AccessRules {
        AccessRules { token: None, allowed_hosts: Vec::new() }
    }

    async fn ends(stream: &mut mpsc::Receiver<Bytes>, within: Duration) -> bool {
        tokio::time::timeout(within, async { while stream.recv().await.is_some() {} }).await.is_ok()
    }

    // Virtual time: the login's end and the heartbeats arrive without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_session_s_stream_ends_when_its_login_expires_and_a_bearer_s_does_not() {
        let (_stop, stopped) = watch::channel(false);
        let (_rules, access) = watch::channel(no_rules());
        let console = Console::start(Arc::new(empty), Arc::default(), stopped, access);
        let expiry = crate::clock::unix_now() + 60;
        let caller = Caller::Session(format!("{expiry:x}.mac"));
        let mut session =
            console.answer("/api/console/live", &caller).and_then(|r| r.stream).expect("a stream");
        let mut bearer =
            console.answer("/api/console/live", &Caller::Bearer).and_then(|r| r.stream).expect("a stream");
        assert!(!ends(&mut session, Duration::from_secs(30)).await, "open before the login expires");
        assert!(ends(&mut session, Duration::from_secs(60)).await, "ended when the login expired");
        assert!(!ends(&mut bearer, Duration::from_secs(600)).await, "a bearer stream stays open");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_end_when_the_rules_change_but_not_when_their_sender_is_gone() {
        let (_stop, stopped) = watch::channel(false);
        let (rules, access) = watch::channel(no_rules());
        let console = Console::start(Arc::new(empty), Arc::default(), stopped.clone(), access);
        let mut stream =
            console.answer("/api/console/live", &Caller::Bearer).and_then(|r| r.stream).expect("a stream");
        assert!(!ends(&mut stream, Duration::from_secs(5)).await, "open while the rules hold");
        rules.send_replace(AccessRules { token: Some("new".into()), allowed_hosts: Vec::new() });
        assert!(ends(&mut stream, Duration::from_secs(5)).await, "ended by the new rules");

        let console = Console::start(Arc::new(empty), Arc::default(), stopped, watch::channel(no_rules()).1);
        let mut stream =
            console.answer("/api/console/live", &Caller::Bearer).and_then(|r| r.stream).expect("a stream");
        assert!(!ends(&mut stream, Duration::from_secs(60)).await, "rules that cannot change end nothing");
    }
}
