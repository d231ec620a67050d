//! The seal cards this node knows (see [`crate::tls::card`]): its own, and those of other
//! members, which an origin needs to seal a flow to an exit.
//!
//! Cards spread over the links: when a link comes up, each side sends every card it knows
//! on a unidirectional stream; a card that is new to a node goes on to its other links. A
//! card proves itself (CA-signed certificate, signature over the key), so a node passes on
//! only cards it checked, and nobody on the way needs to be trusted. Each member's card
//! reaches every node its links connect to, also when the exit is several hops away and
//! no scheduler runs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::Connection;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::node::Shared;
use crate::tls::card::{self, Card, CardError};

/// Most cards kept (members of one mesh).
const MAX_CARDS: usize = 16_384;
/// Largest batch of cards read from one stream.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Cards by node id.
pub(crate) struct CardStore {
    cards: RwLock<HashMap<String, Arc<Card>>>,
    /// Bumped whenever a card is added or replaced, for flows waiting for one.
    changed: watch::Sender<u64>,
}

impl Default for CardStore {
    fn default() -> Self {
        Self { cards: RwLock::default(), changed: watch::channel(0).0 }
    }
}

impl CardStore {
    /// The card of `node`, if known.
    pub(crate) fn get(&self, node: &str) -> Option<Arc<Card>> {
        self.cards.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// The card of `node`, waiting up to `wait` for it to arrive (a link that just came up
    /// brings it a moment later).
    pub(crate) async fn wait_for(&self, node: &str, wait: Duration) -> Option<Arc<Card>> {
        let mut changed = self.changed.subscribe();
        let found = async {
            loop {
                if let Some(card) = self.get(node) {
                    return card;
                }
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(wait, found).await.ok()
    }

    /// Every card known.
    pub(crate) fn all(&self) -> Vec<Card> {
        self.cards.read().unwrap_or_else(|p| p.into_inner()).values().map(|c| (**c).clone()).collect()
    }

    /// Takes `card` if it checks out against `shared`'s CA and revocations and is not
    /// older than the one held; returns whether it was new.
    pub(crate) fn learn(&self, shared: &Shared, card: Card) -> Result<bool, CardError> {
        if let Some(held) = self.get(&card.node_id)
            && *held == card
        {
            return Ok(false);
        }
        shared.tls.identity().verify_card(&card)?;
        let mut cards = self.cards.write().unwrap_or_else(|p| p.into_inner());
        let issued = |c: &Card| crate::pki::validity_der(&c.cert).map_or(i64::MIN, |(from, _)| from);
        if let Some(held) = cards.get(&card.node_id)
            && issued(held) > issued(&card)
        {
            return Ok(false);
        }
        if cards.len() >= MAX_CARDS && !cards.contains_key(&card.node_id) {
            return Ok(false);
        }
        cards.insert(card.node_id.clone(), Arc::new(card));
        drop(cards);
        self.changed.send_modify(|v| *v += 1);
        Ok(true)
    }

    /// Puts this node's own card in (at start, and after a renewal).
    pub(crate) fn set_own(&self, card: Card) {
        self.cards.write().unwrap_or_else(|p| p.into_inner()).insert(card.node_id.clone(), Arc::new(card));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Forgets the cards whose certificates are now revoked.
    pub(crate) fn drop_revoked(&self, revocations: &crate::tls::Revocations) {
        self.cards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| !revocations.refuses(&rustls::pki_types::CertificateDer::from(c.cert.as_slice())));
    }
}

/// Runs the card exchange on a link that just came up: sends every card known, then takes
/// the peer's batches for as long as the link lives.
pub(crate) async fn exchange(shared: Arc<Shared>, peer: String, conn: Connection) {
    tokio::spawn(send_batch(conn.clone(), shared.cards.all()));
    loop {
        let mut stream = match conn.accept_uni().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let bytes = match stream.read_to_end(MAX_BATCH_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                debug!(peer = %peer, "card batch not read: {e}");
                continue;
            }
        };
        let Some(batch) = card::decode_batch(&bytes) else {
            warn!(peer = %peer, "malformed card batch ignored");
            continue;
        };
        let mut fresh = Vec::new();
        for c in batch {
            match shared.cards.learn(&shared, c.clone()) {
                Ok(true) => fresh.push(c),
                Ok(false) => {}
                Err(e) => {
                    debug!(peer = %peer, node = %crate::logging::log_escape(&c.node_id), "card refused: {e}")
                }
            }
        }
        if !fresh.is_empty() {
            share(&shared, &fresh, Some(&peer));
        }
    }
}

/// Sends `cards` to every live link except `except`'s.
pub(crate) fn share(shared: &Shared, cards: &[Card], except: Option<&str>) {
    for (id, conn) in shared.pool.live_links() {
        if Some(id.as_str()) != except {
            tokio::spawn(send_batch(conn, cards.to_vec()));
        }
    }
}

async fn send_batch(conn: Connection, cards: Vec<Card>) {
    if cards.is_empty() {
        return;
    }
    let bytes = card::encode_batch(&cards);
    // Bounded: a peer that never takes the stream must not hold the task.
    let send = async {
        let mut stream = conn.open_uni().await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        stream.finish().ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), send).await;
}
