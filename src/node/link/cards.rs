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

/// Cards by node id.
pub(crate) struct CardStore {
    cards: RwLock<HashMap<String, Arc<Card>>>,
    /// Bumped whenever a card is added or replaced, for flows waiting for one.
    changed: watch::Sender<u64>,
    /// This node's own card, encoded once: every sealed flow it opens carries it.
    own_encoded: RwLock<Arc<Vec<u8>>>,
}

impl Default for CardStore {
    fn default() -> Self {
        Self { cards: RwLock::default(), changed: watch::channel(0).0, own_encoded: RwLock::default() }
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

    /// This node's own card, encoded.
    pub(crate) fn own_encoded(&self) -> Arc<Vec<u8>> {
        self.own_encoded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every card known.
    pub(crate) fn all(&self) -> Vec<Card> {
        self.cards.read().unwrap_or_else(|p| p.into_inner()).values().map(|c| (**c).clone()).collect()
    }

    /// Takes `card` for use: one the store already holds (the same certificate and key,
    /// whatever the signature's bytes, which differ each time a node signs) is checked only
    /// for expiry and revocation; one with an older certificate than the held one is
    /// refused; any other is checked in full against `shared`'s CA and revocations and
    /// kept. Returns whether it was new (worth passing on). A new signature over the same
    /// certificate and key is not new, so restarts and hostile re-signing flood nothing.
    pub(crate) fn learn(&self, shared: &Shared, card: Card) -> Result<bool, CardError> {
        let issued = |c: &Card| crate::pki::validity_der(&c.cert).map_or(i64::MIN, |(from, _)| from);
        if let Some(held) = self.get(&card.node_id) {
            if held.cert == card.cert && held.seal_key == card.seal_key {
                return still_valid(shared, &held).map(|()| false);
            }
            if issued(&card) <= issued(&held) {
                return Err(CardError::Older);
            }
        }
        shared.tls.identity().verify_card(&card)?;
        let mut cards = self.cards.write().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: another task may have stored a newer one meanwhile.
        if let Some(held) = cards.get(&card.node_id)
            && issued(held) >= issued(&card)
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
        *self.own_encoded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(card::encode(&card));
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

/// A held card's certificate is still in force: not expired, not revoked since.
fn still_valid(shared: &Shared, card: &Card) -> Result<(), CardError> {
    let expired =
        crate::pki::validity_der(&card.cert).is_none_or(|(_, until)| until < crate::clock::unix_now() as i64);
    if expired {
        return Err(CardError::Certificate("expired".into()));
    }
    if shared.tls.revocations().refuses(&rustls::pki_types::CertificateDer::from(card.cert.as_slice())) {
        return Err(CardError::Revoked);
    }
    Ok(())
}

/// Runs the card exchange on a link that just came up: sends every card known, then takes
/// the peer's batches for as long as the link lives.
pub(crate) async fn exchange(shared: Arc<Shared>, peer: String, conn: Connection) {
    tokio::spawn(send_batches(conn.clone(), shared.cards.all()));
    loop {
        let mut stream = match conn.accept_uni().await {
            Ok(s) => s,
            Err(_) => return,
        };
        // Bounded: a peer that opens a stream and stalls must not hold the exchange.
        let read = tokio::time::timeout(BATCH_READ_TIMEOUT, stream.read_to_end(card::MAX_BATCH_BYTES)).await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                debug!(peer = %peer, "card batch not read: {e}");
                continue;
            }
            Err(_) => {
                let _ = stream.stop(quinn::VarInt::from_u32(0));
                debug!(peer = %peer, "card batch not read in time");
                continue;
            }
        };
        let Some(batch) = card::decode_batch(&bytes) else {
            warn!(peer = %peer, "malformed card batch ignored");
            continue;
        };
        // Checking certificates and signatures is CPU work: off the async workers.
        let (checker, from) = (shared.clone(), peer.clone());
        let fresh = tokio::task::spawn_blocking(move || {
            let mut fresh = Vec::new();
            for c in batch {
                match checker.cards.learn(&checker, c.clone()) {
                    Ok(true) => fresh.push(c),
                    Ok(false) | Err(CardError::Older) => {}
                    Err(e) => {
                        debug!(peer = %from, node = %crate::logging::log_escape(&c.node_id), "card refused: {e}")
                    }
                }
            }
            fresh
        })
        .await
        .unwrap_or_default();
        if !fresh.is_empty() {
            share(&shared, &fresh, Some(&peer));
        }
    }
}

/// How long one batch may take to arrive.
const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `cards` to every live link except `except`'s.
pub(crate) fn share(shared: &Shared, cards: &[Card], except: Option<&str>) {
    for (id, conn) in shared.pool.live_links() {
        if Some(id.as_str()) != except {
            tokio::spawn(send_batches(conn, cards.to_vec()));
        }
    }
}

/// Sends `cards` in batches of at most [`card::MAX_BATCH_CARDS`], one stream each.
async fn send_batches(conn: Connection, cards: Vec<Card>) {
    for batch in cards.chunks(card::MAX_BATCH_CARDS) {
        let bytes = card::encode_batch(batch);
        // Bounded: a peer that never takes the stream (an older node allows none) must
        // not hold the task.
        let send = async {
            let mut stream = conn.open_uni().await.ok()?;
            stream.write_all(&bytes).await.ok()?;
            stream.finish().ok()
        };
        if tokio::time::timeout(BATCH_READ_TIMEOUT, send).await.ok().flatten().is_none() {
            return;
        }
    }
}
