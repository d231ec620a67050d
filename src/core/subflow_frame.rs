//! Frames on a multipath subflow stream, after the header and reply.
//!
//! Both directions of every subflow carry a sequence of frames:
//!
//! | type | name | body |
//! | --- | --- | --- |
//! | 1 | `Data` | offset u64, length u32, then that many bytes of the flow |
//! | 2 | `Ack` | delivered u64 (flow bytes written to the receiver's TCP socket), received u64 (payload bytes this subflow carried to the receiver) |
//! | 3 | `Fin` | offset u64: the sender's direction of the flow ends there |
//!
//! Integers are big endian. The decoder is incremental (bytes arrive in arbitrary pieces)
//! and bounded: a `Data` frame longer than [`MAX_DATA`] or an unknown type is an error, so
//! a hostile peer cannot make it buffer more than one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload of one `Data` frame.
pub const MAX_DATA: usize = 64 * 1024;
/// Bytes before a `Data` frame's payload.
pub const DATA_PREFIX_LEN: usize = 13;

const DATA: u8 = 1;
const ACK: u8 = 2;
const FIN: u8 = 3;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Flow bytes at `offset`.
    Data {
        /// Offset of the first byte in the flow.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// What the sender of this frame has taken from the flow so far.
    Ack {
        /// Flow bytes written to the TCP socket (cumulative): the peer may forget them.
        delivered: u64,
        /// Payload bytes received on this subflow (cumulative): the peer's measure of
        /// what this path carries.
        received: u64,
    },
    /// The sender's direction ends at `offset` (its TCP side was half-closed).
    Fin {
        /// Total bytes of the direction.
        offset: u64,
    },
}

/// Why a subflow's bytes are not valid frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame type this version does not know.
    #[error("unknown subflow frame type {0}")]
    UnknownType(u8),
    /// A data frame longer than [`MAX_DATA`].
    #[error("data frame of {0} bytes exceeds {MAX_DATA}")]
    TooLong(usize),
}

impl Frame {
    /// The bytes before the payload (all of the frame except `Data`'s payload).
    pub fn prefix(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(17);
        match self {
            Frame::Data { offset, data } => {
                out.put_u8(DATA);
                out.put_u64(*offset);
                out.put_u32(data.len() as u32);
            }
            Frame::Ack { delivered, received } => {
                out.put_u8(ACK);
                out.put_u64(*delivered);
                out.put_u64(*received);
            }
            Frame::Fin { offset } => {
                out.put_u8(FIN);
                out.put_u64(*offset);
            }
        }
        out.freeze()
    }

    /// The whole frame as the chunks to write: prefix, then the payload for `Data`.
    pub fn chunks(&self) -> [Bytes; 2] {
        match self {
            Frame::Data { data, .. } => [self.prefix(), data.clone()],
            _ => [self.prefix(), Bytes::new()],
        }
    }
}

/// Incremental decoder for one direction of one subflow.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(&kind) = self.buf.first() else { return Ok(None) };
        let need = match kind {
            DATA if self.buf.len() >= DATA_PREFIX_LEN => {
                let len =
                    u32::from_be_bytes([self.buf[9], self.buf[10], self.buf[11], self.buf[12]]) as usize;
                if len > MAX_DATA {
                    return Err(FrameError::TooLong(len));
                }
                DATA_PREFIX_LEN + len
            }
            DATA => DATA_PREFIX_LEN,
            ACK => 17,
            FIN => 9,
            other => return Err(FrameError::UnknownType(other)),
        };
        if self.buf.len() < need {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(need);
        frame.advance(1);
        Ok(Some(match kind {
            DATA => {
                let offset = frame.get_u64();
                frame.advance(4);
                Frame::Data { offset, data: frame.freeze() }
            }
            ACK => Frame::Ack { delivered: frame.get_u64(), received: frame.get_u64() },
            _ => Frame::Fin { offset: frame.get_u64() },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.chunks().concat()).collect()
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Data { offset: 7, data: Bytes::from_static(b"hello") },
            Frame::Ack { delivered: 1 << 40, received: 3 },
            Frame::Data { offset: 12, data: Bytes::new() },
            Frame::Fin { offset: 12 },
        ]
    }

    #[test]
    fn frames_round_trip_whatever_the_split() {
        let bytes = encoded(&samples());
        for piece in 1..bytes.len() {
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for part in bytes.chunks(piece) {
                d.feed(part);
                while let Some(f) = d.next_frame().expect("valid") {
                    out.push(f);
                }
            }
            assert_eq!(out, samples(), "split into pieces of {piece}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn an_oversized_data_frame_is_refused_before_its_payload_arrives() {
        let mut d = FrameDecoder::new();
        let mut prefix = vec![DATA];
        prefix.extend_from_slice(&0u64.to_be_bytes());
        prefix.extend_from_slice(&(MAX_DATA as u32 + 1).to_be_bytes());
        d.feed(&prefix);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(MAX_DATA + 1)));
    }

    #[test]
    fn an_unknown_type_is_refused() {
        let mut d = FrameDecoder::new();
        d.feed(&[9, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(9)));
    }
}
