//! A flow's end-to-end seal as the splices use it: the origin's side seals what it sends
//! (early key until the exit's reply, then the final one) and opens the exit's records
//! after the sealed reply; the exit's side has both keys from the start. Unsealed flows
//! (`mesh.e2e: preferred` towards an exit without a card) pass bytes through unchanged.

use std::sync::Mutex;

use bytes::Bytes;

use crate::core::seal::handshake::Initiator;
use crate::core::seal::record::{Opener, Sealer};
use crate::core::wire::{self, Decoded, Reply};
use crate::node::splice::FlowEnd;

/// A flow's seal, as handed to a splice.
pub(crate) enum FlowSeal {
    /// Bytes pass unchanged.
    Plain,
    /// The origin, before the exit's reply.
    Origin {
        /// Seals under the early key until the reply brings the final one.
        early: Box<Sealer>,
        /// Opens the reply.
        initiator: Box<Initiator>,
    },
    /// The exit, after it sealed its reply.
    Exit {
        /// Seals the exit's records.
        sealer: Box<Sealer>,
        /// Opens the origin's records.
        opener: Box<Opener>,
    },
}

impl FlowSeal {
    /// Splits into the sending and receiving halves.
    pub(crate) fn split(self) -> (UpSeal, DownSeal) {
        match self {
            Self::Plain => (UpSeal(None), DownSeal { initiator: None, opener: None }),
            Self::Origin { early, initiator } => {
                (UpSeal(Some(Mutex::new(*early))), DownSeal { initiator: Some(*initiator), opener: None })
            }
            Self::Exit { sealer, opener } => {
                (UpSeal(Some(Mutex::new(*sealer))), DownSeal { initiator: None, opener: Some(*opener) })
            }
        }
    }
}

fn broken(e: crate::core::seal::SealError) -> FlowEnd {
    FlowEnd::Protocol(format!("sealed stream: {e}"))
}

/// The sending half. Behind a lock because the receiving half switches its key when the
/// exit's reply arrives; the lock is never held across an await.
pub(crate) struct UpSeal(Option<Mutex<Sealer>>);

impl UpSeal {
    /// Whether bytes are sealed.
    pub(crate) fn is_sealed(&self) -> bool {
        self.0.is_some()
    }

    /// The bytes to send for `data`.
    pub(crate) fn seal(&self, data: Bytes) -> Result<Bytes, FlowEnd> {
        match &self.0 {
            None => Ok(data),
            Some(s) => s.lock().unwrap_or_else(|p| p.into_inner()).seal(&data).map_err(broken),
        }
    }

    /// Seals in place the record reserved in `record` (see
    /// [`Sealer::seal_reserved`]); returns a record to send before it. Sealed flows only.
    pub(crate) fn seal_reserved(&self, record: &mut bytes::BytesMut) -> Result<Option<Bytes>, FlowEnd> {
        match &self.0 {
            None => Err(FlowEnd::Protocol("sealing an unsealed flow".into())),
            Some(s) => s.lock().unwrap_or_else(|p| p.into_inner()).seal_reserved(record).map_err(broken),
        }
    }

    /// The record that ends this direction (none when unsealed).
    pub(crate) fn fin(&self) -> Result<Option<Bytes>, FlowEnd> {
        match &self.0 {
            None => Ok(None),
            Some(s) => s.lock().unwrap_or_else(|p| p.into_inner()).fin().map(Some).map_err(broken),
        }
    }

    fn switch_to(&self, key: [u8; 32]) {
        if let Some(s) = &self.0 {
            s.lock().unwrap_or_else(|p| p.into_inner()).switch_to(key);
        }
    }
}

/// The receiving half.
pub(crate) struct DownSeal {
    initiator: Option<Initiator>,
    opener: Option<Opener>,
}

impl DownSeal {
    /// Turns the reply read off the stream into the exit's answer. On a sealed flow only
    /// a sealed reply may say `Opened`; a refusal in the clear is a relay's (it cannot
    /// seal) and is taken as one.
    pub(crate) fn reply(&mut self, reply: Reply, up: &UpSeal) -> Result<Reply, FlowEnd> {
        match (reply, self.initiator.take()) {
            (Reply::Sealed(message), Some(initiator)) => {
                let finished = initiator.finish(&message).map_err(broken)?;
                up.switch_to(finished.origin_to_exit);
                self.opener = Some(finished.opener);
                match wire::decode_reply(&finished.reply) {
                    Ok(Decoded::Complete(r @ (Reply::Opened | Reply::Refused { .. }), n))
                        if n == finished.reply.len() =>
                    {
                        Ok(r)
                    }
                    _ => Err(FlowEnd::BadReply("malformed sealed reply".into())),
                }
            }
            (Reply::Sealed(_), None) => Err(FlowEnd::BadReply("sealed reply on an unsealed flow".into())),
            (Reply::Opened, Some(_)) => {
                Err(FlowEnd::BadReply("`Opened` in the clear on a sealed flow: not from the exit".into()))
            }
            (r, _) => Ok(r),
        }
    }

    /// Whether the exit's sealed reply came and opened (an `Opened` or a refusal only the
    /// exit could have sealed).
    pub(crate) fn answered_sealed(&self) -> bool {
        self.initiator.is_none() && self.opener.is_some()
    }

    /// Appends the plaintext in `bytes` to `out`.
    pub(crate) fn open(&mut self, bytes: Bytes, out: &mut Vec<Bytes>) -> Result<(), FlowEnd> {
        match &mut self.opener {
            None if self.initiator.is_some() => Err(FlowEnd::BadReply("data before the sealed reply".into())),
            None => {
                if !bytes.is_empty() {
                    out.push(bytes);
                }
                Ok(())
            }
            Some(o) => o.open(&bytes, out).map_err(broken),
        }
    }

    /// Checks that the stream's end was a sealed one.
    pub(crate) fn end(&self) -> Result<(), FlowEnd> {
        match &self.opener {
            None => Ok(()),
            Some(o) => o.check_end().map_err(broken),
        }
    }
}
