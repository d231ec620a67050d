//! QUIC packets over one byte stream: the socket a TCP link's QUIC connection runs on.
//!
//! quinn reads and writes packets through [`quinn::AsyncUdpSocket`]; this implements it over
//! one TLS-on-TCP connection to one peer, so a link over TCP is the same
//! `quinn::Connection` as a link over UDP, with its streams, flow control, resets and
//! datagrams, and the rest of the node does not care which transport carries it.
//!
//! Each packet travels as a 2-byte big-endian length and the packet. Packets queue in a
//! bounded channel in front of a writer task; when it is full `try_send` says `WouldBlock`
//! and quinn waits on the poller, so a slow TCP connection pushes back on QUIC instead of
//! buffering without bound. Received packets go through a bounded channel too, so quinn
//! not keeping up pushes back on TCP.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Packets queued towards the writer: with 16 KiB packets about a megabyte, on top of
/// the kernel's send buffer.
const SEND_QUEUE: usize = 64;
/// Packets read from TCP and not yet taken by quinn.
const RECEIVE_QUEUE: usize = 64;
/// Most bytes the writer gathers into one write (many small packets, one syscall and a
/// few TLS records).
const WRITE_BATCH: usize = 256 * 1024;

/// One peer's packets over a byte stream (see the module doc).
pub(crate) struct StreamSocket {
    local: SocketAddr,
    peer: SocketAddr,
    outgoing: mpsc::Sender<Bytes>,
    incoming: Mutex<mpsc::Receiver<Bytes>>,
    /// The reader and writer tasks; aborted when the socket goes.
    tasks: [JoinHandle<()>; 2],
}

impl fmt::Debug for StreamSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSocket").field("local", &self.local).field("peer", &self.peer).finish()
    }
}

impl Drop for StreamSocket {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Set to `true` once the byte stream under a [`StreamSocket`] ended or failed: the QUIC
/// connection on it cannot hear from the peer any more.
pub(crate) type StreamEnded = watch::Receiver<bool>;

impl StreamSocket {
    /// Starts carrying packets over `stream`, whose ends are `local` and `peer`; packets
    /// are received as if sent from `peer`.
    pub(crate) fn new<S>(stream: S, local: SocketAddr, peer: SocketAddr) -> (Arc<Self>, StreamEnded)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(RECEIVE_QUEUE);
        let (ended_tx, ended) = watch::channel(false);
        let ended_tx = Arc::new(ended_tx);
        let on_end = ended_tx.clone();
        let read = tokio::spawn(async move {
            let _ = read_packets(reader, in_tx).await;
            on_end.send_replace(true);
        });
        let write = tokio::spawn(async move {
            let _ = write_packets(writer, out_rx).await;
            ended_tx.send_replace(true);
        });
        let socket =
            Self { local, peer, outgoing: out_tx, incoming: Mutex::new(in_rx), tasks: [read, write] };
        (Arc::new(socket), ended)
    }
}

impl StreamSocket {
    /// Stops carrying packets and drops the byte stream.
    pub(crate) fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Frames each packet queued on `packets` onto `writer`, many per write when they queue up.
async fn write_packets<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut packets: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = packets.recv().await {
        batch.clear();
        push_frame(&mut batch, &first);
        while batch.len() < WRITE_BATCH {
            match packets.try_recv() {
                Ok(p) => push_frame(&mut batch, &p),
                Err(_) => break,
            }
        }
        writer.write_all(&batch).await?;
        if packets.is_empty() {
            writer.flush().await?;
        }
    }
    writer.shutdown().await
}

fn push_frame(batch: &mut Vec<u8>, packet: &[u8]) {
    // quinn never builds a packet over the endpoint's payload limit (below 64 KiB).
    let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
    batch.extend_from_slice(&len.to_be_bytes());
    batch.extend_from_slice(&packet[..usize::from(len)]);
}

/// Reads framed packets from `reader` into `packets` until the stream ends.
async fn read_packets<R: AsyncRead + Unpin>(reader: R, packets: mpsc::Sender<Bytes>) -> io::Result<()> {
    let mut reader = tokio::io::BufReader::with_capacity(WRITE_BATCH, reader);
    loop {
        let len = match reader.read_u16().await {
            Ok(len) => usize::from(len),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut packet = BytesMut::zeroed(len);
        reader.read_exact(&mut packet).await?;
        if packets.send(packet.freeze()).await.is_err() {
            return Ok(());
        }
    }
}

impl AsyncUdpSocket for StreamSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(QueuePoller { queue: self.outgoing.clone(), waiting: None })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match self.outgoing.try_send(Bytes::copy_from_slice(transmit.contents)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            // The stream is gone; the link's supervisor closes the connection. A lost
            // packet is what QUIC expects of a socket.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let packet = if filled == 0 {
                match incoming.poll_recv(cx) {
                    Poll::Ready(Some(p)) => p,
                    // Ended: nothing more will come; the supervisor closes the connection.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match incoming.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let buf = &mut bufs[filled];
            // A packet larger than quinn's buffer cannot be a valid one for this endpoint.
            if packet.len() > buf.len() {
                continue;
            }
            buf[..packet.len()].copy_from_slice(&packet);
            meta[filled] = RecvMeta {
                addr: self.peer,
                len: packet.len(),
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        // TCP carries any packet whole: no path MTU to discover.
        false
    }
}

/// Wakes quinn when the send queue has room again.
struct QueuePoller {
    queue: mpsc::Sender<Bytes>,
    waiting: Option<Pin<Box<dyn Future<Output = bool> + Send + Sync>>>,
}

impl fmt::Debug for QueuePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePoller").finish_non_exhaustive()
    }
}

impl UdpPoller for QueuePoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let queue = self.queue.clone();
        let waiting = self.waiting.get_or_insert_with(|| {
            // Holding a permit reserves a slot; dropping it at once hands the slot back for
            // quinn's next `try_send`.
            Box::pin(async move { queue.reserve().await.is_ok() })
        });
        match waiting.as_mut().poll(cx) {
            Poll::Ready(_) => {
                self.waiting = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packets_cross_whole_and_in_order_and_the_end_is_reported() {
        let (a, b) = tokio::io::duplex(1024);
        let addr_a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let addr_b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let (sa, _ended_a) = StreamSocket::new(a, addr_a, addr_b);
        let (sb, mut ended_b) = StreamSocket::new(b, addr_b, addr_a);
        let sizes = [1usize, 1200, 16_000, 65_000, 3];
        let mut sent = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let packet: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
            let t = Transmit {
                destination: addr_b,
                ecn: None,
                contents: &packet,
                segment_size: None,
                src_ip: None,
            };
            sa.try_send(&t).expect("queue has room");
            sent.push(packet);
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let mut storage = vec![0u8; 65_535];
            let mut bufs = [IoSliceMut::new(&mut storage)];
            let mut meta = [RecvMeta { addr: addr_a, len: 0, stride: 0, ecn: None, dst_ip: None }];
            let n = std::future::poll_fn(|cx| sb.poll_recv(cx, &mut bufs, &mut meta)).await.expect("recv");
            assert_eq!(n, 1);
            assert_eq!(meta[0].addr, addr_a, "packets come from the stream's peer");
            got.push(storage[..meta[0].len].to_vec());
        }
        assert_eq!(got, sent);
        drop(sa);
        ended_b.wait_for(|e| *e).await.expect("the end is reported");
    }
}
