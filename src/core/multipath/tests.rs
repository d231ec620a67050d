use super::*;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

#[test]
fn out_of_order_and_duplicate_chunks_come_out_once_in_order() {
    let mut r = Reassembly::new(1 << 20);
    let data = payload(30);
    r.insert(20, data.slice(20..30)).expect("fits");
    r.insert(10, data.slice(10..20)).expect("fits");
    assert_eq!(r.pop(), None, "offset 0 is missing");
    r.insert(0, data.slice(0..10)).expect("fits");
    r.insert(5, data.slice(5..25)).expect("duplicate is fine");
    let mut out = Vec::new();
    while let Some(b) = r.pop() {
        out.extend_from_slice(&b);
    }
    assert_eq!(out, data.to_vec());
    assert_eq!((r.delivered(), r.held()), (30, 0));
}

#[test]
fn the_bound_is_never_exceeded_and_a_refused_chunk_can_come_again() {
    let mut r = Reassembly::new(16);
    let data = payload(64);
    assert_eq!(r.insert(16, data.slice(16..40)), Err(Refused::Full));
    r.insert(16, data.slice(16..32)).expect("fits exactly");
    assert_eq!(r.insert(32, data.slice(32..33)), Err(Refused::Full));
    r.insert(0, data.slice(0..16)).expect("bytes that continue the stream are always taken");
    let mut popped = 0;
    while let Some(b) = r.pop() {
        popped += b.len();
    }
    assert_eq!((popped, r.held()), (32, 0));
}

#[test]
fn random_splits_orders_and_resends_reassemble_exactly_within_the_bound() {
    let mut rng = Rng(0xfeed_0000_0000_0005);
    for _ in 0..300 {
        let total = 1 + rng.below(5000) as usize;
        let data = payload(total);
        let bound = 64 + rng.below(2000) as usize;
        // Chunks of random sizes, each sent once or twice, delivered in a random order.
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < total {
            let len = (1 + rng.below(300) as usize).min(total - at);
            chunks.push((at as u64, data.slice(at..at + len)));
            if rng.below(4) == 0 {
                chunks.push((at as u64, data.slice(at..at + len)));
            }
            at += len;
        }
        for i in (1..chunks.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            chunks.swap(i, j);
        }
        let mut r = Reassembly::new(bound);
        let mut out = Vec::new();
        let mut queue: VecDeque<(u64, Bytes)> = chunks.into();
        let mut stalls = 0;
        while let Some((offset, chunk)) = queue.pop_front() {
            match r.insert(offset, chunk.clone()) {
                Ok(()) => stalls = 0,
                Err(Refused::Full) => {
                    // Refused: the sender keeps it and offers it later.
                    queue.push_back((offset, chunk));
                    stalls += 1;
                }
            }
            while let Some(b) = r.pop() {
                out.extend_from_slice(&b);
            }
            assert!(r.held() <= bound, "{} bytes wait for a gap, bound {bound}", r.held());
            // With a full buffer and nothing deliverable, only the missing chunk helps:
            // offer the lowest offset first, as a sender resending in order would.
            if stalls > queue.len() {
                let lowest = (0..queue.len()).min_by_key(|&k| queue[k].0).expect("queue");
                if let Some(c) = queue.remove(lowest) {
                    queue.push_front(c);
                }
                stalls = 0;
            }
        }
        assert_eq!(out, data.to_vec());
    }
}

#[test]
fn acks_free_the_send_buffer_and_a_dead_subflow_is_resent_elsewhere() {
    let mut s = SendBuffer::new(100);
    assert_eq!(s.push(payload(40), 0), Ok(0));
    assert_eq!(s.push(payload(40), 1), Ok(40));
    assert_eq!(s.push(payload(40), 0), Err(Refused::Full));
    s.ack(40);
    assert_eq!(s.held(), 40);
    assert_eq!(s.push(payload(40), 0), Ok(80));
    let resend = s.reassign(1, 0);
    assert_eq!(resend.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![40]);
    assert!(s.reassign(1, 0).is_empty(), "moved to subflow 0");
}

#[test]
fn the_fastest_subflow_with_room_gets_the_next_chunk() {
    let sub = |alive, rtt_us, room| SubflowState { alive, rtt_us, room };
    let subs = [sub(true, 120_000, 1 << 20), sub(true, 10_000, 100), sub(false, 1_000, 1 << 20)];
    assert_eq!(pick_subflow(subs.iter(), 64), Some(1));
    assert_eq!(pick_subflow(subs.iter(), 1000), Some(0), "the fast one has no room");
    assert_eq!(pick_subflow([sub(false, 1, 10)], 1), None);
}

#[test]
fn chunks_of_a_lost_subflow_wait_until_taken_one_by_one() {
    let mut s = SendBuffer::new(1 << 20);
    for (i, sub) in [0, 1, 0, 1].into_iter().enumerate() {
        s.push(payload(10 + i), sub).expect("room");
    }
    assert!(!s.has_waiting());
    assert_eq!(s.reassign(1, UNASSIGNED).len(), 2);
    assert!(s.has_waiting());
    let first = s.take_waiting(0).expect("oldest waiting chunk");
    assert_eq!((first.offset, first.subflow), (10, 0));
    s.ack(21);
    let second = s.take_waiting(0).expect("the other one");
    assert_eq!(second.offset, 33);
    assert!(!s.has_waiting() && s.take_waiting(0).is_none());
    // Waiting chunks that the peer acknowledges meanwhile stop waiting.
    s.push(payload(5), UNASSIGNED).expect("room");
    s.ack(u64::MAX);
    assert!(!s.has_waiting());
}

#[test]
fn the_send_buffer_counts_chunks_as_well_as_bytes() {
    let mut s = SendBuffer::new(usize::MAX);
    for _ in 0..MAX_CHUNKS_IN_FLIGHT {
        s.push(payload(1), 0).expect("room");
    }
    assert!(!s.has_room(1));
    assert_eq!(s.room(), 0);
    assert_eq!(s.push(payload(1), 0), Err(Refused::Full));
}

#[test]
fn a_reorder_buffer_refuses_more_pieces_than_any_honest_sender_needs() {
    let mut r = Reassembly::new(usize::MAX);
    for i in 0..MAX_PENDING_PIECES as u64 {
        r.insert(1 + 2 * i, payload(1)).expect("within the piece cap");
    }
    assert_eq!(r.insert(1 + 2 * MAX_PENDING_PIECES as u64, payload(1)), Err(Refused::Full));
}
