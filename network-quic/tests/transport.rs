//! Transport scenarios on 127.0.0.1: delivery, authentication, queue
//! bounds, slow peers, snapshot streams and bad input. Every wait has a
//! deadline (`common::PATIENCE`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use common::*;
use rafter::codec::FORMAT_VERSION;
use rafter::{
    CommandBytes, Entry, EntryPayload, LogId, Membership, Message, MessageBody, RaftNetwork,
    SnapshotMeta,
};
use rafter_quic::frame::encode_frame;
use rafter_quic::{
    node_server_name, ClusterCa, LaneStats, QuicNetwork, StreamClass, TlsMode, TransportConfig,
};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_messages_through_their_sinks() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node::bind(&ca, id, test_config()))
        .collect();
    let book = members(&nodes.iter().collect::<Vec<_>>());
    for node in &mut nodes {
        node.network.set_members(&book).await;
    }
    for node in &mut nodes {
        for peer in 1..=3 {
            if peer != node.id {
                node.network
                    .send(peer, vec![heartbeat(node.id, peer, node.id * 10)])
                    .await;
            }
        }
    }
    for node in &mut nodes {
        let mut senders = BTreeSet::new();
        for _ in 0..2 {
            let message = node.recv().await;
            assert_eq!(message.to, node.id);
            assert_eq!(
                message.body,
                MessageBody::Heartbeat {
                    commit: 0,
                    read_seq: message.from * 10
                }
            );
            senders.insert(message.from);
        }
        let expected: BTreeSet<u64> = (1..=3).filter(|id| *id != node.id).collect();
        assert_eq!(senders, expected);
    }
}

fn append(index: u64) -> Message {
    Message::new(
        1,
        2,
        1,
        MessageBody::Append {
            prev_log_id: LogId::new(1, index - 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(CommandBytes::from(index.to_be_bytes().to_vec())),
            }],
            commit: index - 1,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_arrive_in_order_and_are_coalesced() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let mut one = Node::bind(&ca, 1, test_config());
    let mut two = Node::bind(&ca, 2, test_config());
    one.network.set_members(&members(&[&one, &two])).await;
    const COUNT: u64 = 2000;
    // Several sends without waiting for anything in between.
    for chunk in (1..=COUNT).collect::<Vec<_>>().chunks(100) {
        one.network
            .send(2, chunk.iter().map(|i| append(*i)).collect())
            .await;
    }
    for index in 1..=COUNT {
        assert_eq!(two.recv().await, append(index), "out of order or lost");
    }
    // A lane counts a write when `write_all` returns, which can be after
    // the peer has read it.
    eventually("node 1 counts every append sent", || {
        one.handle
            .stats()
            .raft_lane(2)
            .is_some_and(|l| l.sent_msgs == COUNT)
    })
    .await;
    let lane = one.handle.stats().raft_lane(2).cloned().unwrap();
    assert_eq!(lane.sent_msgs, COUNT);
    assert_eq!(lane.dropped_full, 0);
    assert!(
        lane.writes < COUNT,
        "no coalescing: {} writes for {COUNT} messages",
        lane.writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_certificate_from_another_ca_is_refused() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let evil_ca = ClusterCa::generate("evil").unwrap();
    let mut one = Node::bind(&ca, 1, test_config());
    let one_addr = one.addr();

    // A whole node of the other CA: it cannot connect (each side distrusts
    // the other), so nothing it sends arrives.
    let mut evil = Node::bind(&evil_ca, 3, test_config());
    evil.network
        .set_members(&[(1, one_addr.to_string())].into_iter().collect())
        .await;
    evil.network.send(1, vec![heartbeat(3, 1, 1)]).await;
    eventually("the evil node's dial fails", || {
        evil.handle
            .stats()
            .raft_lane(1)
            .is_some_and(|lane| lane.connect_failures >= 1)
    })
    .await;

    // A client that trusts our CA (so it completes its side of the
    // handshake) but presents a certificate from the other CA: the server
    // refuses it.
    let before = one.handle.stats().inbound.handshakes_failed;
    let forged = evil_ca.issue_node_cert(3).unwrap();
    let client = raw_client(ca.cert_pem(), Some(&forged));
    if let Ok(connection) = client
        .connect(one_addr, &node_server_name(1))
        .unwrap()
        .await
    {
        if let Ok(mut stream) = connection.open_uni().await {
            let _ = stream
                .write_all(&encode_frame(&heartbeat(3, 1, 2), 1024).unwrap())
                .await;
            let _ = stream.finish();
        }
        within("refused connection closes", connection.closed()).await;
    }
    // And a client with no certificate at all.
    let anonymous = raw_client(ca.cert_pem(), None);
    if let Ok(connection) = anonymous
        .connect(one_addr, &node_server_name(1))
        .unwrap()
        .await
    {
        within("anonymous connection closes", connection.closed()).await;
    }
    eventually("both handshakes counted as failed", || {
        one.handle.stats().inbound.handshakes_failed >= before + 2
    })
    .await;
    let inbound = one.handle.stats().inbound;
    assert_eq!(inbound.messages_delivered, 0);
    assert_eq!(inbound.connections_accepted, 0);
    assert!(one.inbox.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_claiming_another_id_is_refused() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let mut one = Node::bind(&ca, 1, test_config());
    let three = ca.issue_node_cert(3).unwrap();

    // Node 3's genuine certificate, but the message claims to be from 2.
    let client = raw_client(ca.cert_pem(), Some(&three));
    let connection = within(
        "connect",
        client.connect(one.addr(), &node_server_name(1)).unwrap(),
    )
    .await
    .unwrap();
    let mut stream = connection.open_uni().await.unwrap();
    stream
        .write_all(&encode_frame(&heartbeat(2, 1, 7), 1024).unwrap())
        .await
        .unwrap();
    assert_eq!(
        close_code(&connection).await,
        Some(2),
        "closed as an identity error"
    );
    assert_eq!(one.handle.stats().inbound.sender_mismatches, 1);
    assert!(
        one.inbox.try_recv().is_err(),
        "the spoofed message was delivered"
    );

    // Control: the same certificate speaking for itself is accepted.
    let connection = within(
        "connect",
        client.connect(one.addr(), &node_server_name(1)).unwrap(),
    )
    .await
    .unwrap();
    let mut stream = connection.open_uni().await.unwrap();
    stream
        .write_all(&encode_frame(&heartbeat(3, 1, 8), 1024).unwrap())
        .await
        .unwrap();
    assert_eq!(one.recv().await, heartbeat(3, 1, 8));

    // Dialling: a node whose certificate names 1 answering where we expect
    // node 2 is refused by our TLS (the server name is `node-2.rafter`).
    let mut four = Node::bind(&ca, 4, test_config());
    four.network
        .set_members(&[(2, one.addr().to_string())].into_iter().collect())
        .await;
    four.network.send(2, vec![heartbeat(4, 2, 1)]).await;
    eventually("dialling the wrong node fails", || {
        four.handle
            .stats()
            .raft_lane(2)
            .is_some_and(|lane| lane.connect_failures >= 1)
    })
    .await;
    assert_eq!(four.handle.stats().raft_lane(2).unwrap().connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_and_the_endpoint_keeps_serving() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let mut one = Node::bind(&ca, 1, test_config());
    let mut two = Node::bind(&ca, 2, test_config());
    let client = raw_client(ca.cert_pem(), Some(&ca.issue_node_cert(3).unwrap()));

    let good = encode_frame(&heartbeat(3, 1, 1), 1024).unwrap();
    let mut wrong_version = good.to_vec();
    wrong_version[4] = FORMAT_VERSION + 1;
    let garbage = [&[0u8, 0, 0, 3][..], &[FORMAT_VERSION, 0xFF, 0xFF]].concat();
    let oversized = (TransportConfig::default().frame_bytes_max as u32 + 1)
        .to_be_bytes()
        .to_vec();
    let truncated = good[..good.len() - 2].to_vec();
    let cases: [(&str, Vec<u8>); 4] = [
        ("wrong version", wrong_version),
        ("malformed", garbage),
        ("oversized", oversized),
        ("truncated", truncated),
    ];
    for (i, (name, bytes)) in cases.into_iter().enumerate() {
        let connection = within(
            "connect",
            client.connect(one.addr(), &node_server_name(1)).unwrap(),
        )
        .await
        .unwrap();
        let mut stream = connection.open_uni().await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let _ = stream.finish();
        assert_eq!(
            close_code(&connection).await,
            Some(1),
            "{name}: closed as a frame error"
        );
        assert_eq!(
            one.handle.stats().inbound.frame_errors,
            i as u64 + 1,
            "{name}"
        );
    }
    assert!(one.inbox.try_recv().is_err());

    // The endpoint still serves a well-behaved peer.
    two.network.set_members(&members(&[&one, &two])).await;
    two.network.send(1, vec![heartbeat(2, 1, 5)]).await;
    assert_eq!(one.recv().await, heartbeat(2, 1, 5));
}

/// Binds an endpoint on `addr` once the previous owner has released it.
async fn bind_when_free(ca: &ClusterCa, id: u64, addr: SocketAddr) -> Node {
    let mut node = None;
    eventually("the port is free", || {
        if std::net::UdpSocket::bind(addr).is_ok() {
            node = Some(Node::bind_with(
                TlsMode::MutualTls(ca.issue_node_cert(id).unwrap()),
                id,
                addr,
                test_config(),
            ));
        }
        node.is_some()
    })
    .await;
    node.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_holds_while_a_peer_is_down_and_the_peer_is_redialled_when_it_returns() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let config = TransportConfig {
        queue_msgs_max: 50,
        queue_bytes_max: 40 << 10,
        frame_bytes_max: 16 << 10,
        ..test_config()
    };
    let mut one = Node::bind(&ca, 1, config.clone());
    // Node 2's address, with nothing listening there yet.
    let two_addr = {
        let placeholder = Node::bind(&ca, 2, test_config());
        let addr = placeholder.addr();
        placeholder.handle.close().await;
        addr
    };
    one.network
        .set_members(&[(2, two_addr.to_string())].into_iter().collect())
        .await;

    let payload = CommandBytes::from(vec![7u8; 2000]);
    let big = |index: u64| append_with(index, &payload);
    let mut sent = 0u64;
    let check_bound = |stats: &rafter_quic::LaneStats| {
        assert!(
            stats.queued_msgs_high_water <= config.queue_msgs_max,
            "{stats:?}"
        );
        assert!(
            stats.queued_bytes_high_water <= config.queue_bytes_max,
            "{stats:?}"
        );
        assert!(stats.queued_msgs <= config.queue_msgs_max);
        assert!(stats.queued_bytes <= config.queue_bytes_max);
    };
    // Keep sending until the peer has been found unreachable twice, so the
    // queue fills, drops, is cleared and fills again.
    loop {
        let batch: Vec<Message> = (sent + 1..=sent + 20).map(big).collect();
        sent += 20;
        one.network.send(2, batch).await;
        let stats = one.handle.stats().raft_lane(2).cloned().unwrap();
        check_bound(&stats);
        if stats.connect_failures >= 2 && stats.dropped_full > 0 {
            break;
        }
        assert!(sent < 10_000_000, "peer never found unreachable");
        tokio::task::yield_now().await;
    }
    let stats = one.handle.stats().raft_lane(2).cloned().unwrap();
    let frame_bytes = encode_frame(&big(1), config.frame_bytes_max).unwrap().len() as u64;
    assert!(
        stats.queued_bytes_high_water + frame_bytes > config.queue_bytes_max,
        "the byte bound was reached: {stats:?}"
    );
    assert!(
        stats.queued_msgs_high_water < config.queue_msgs_max,
        "the bytes bind first"
    );
    assert!(stats.dropped_unreachable > 0, "{stats:?}");
    assert_eq!(stats.sent_msgs, 0);

    // Node 2 comes back on the same address: node 1 redials (backoff capped
    // at 200 ms) and delivery resumes.
    let mut two = bind_when_free(&ca, 2, two_addr).await;
    eventually("node 1 reconnects", || {
        one.handle.stats().raft_lane(2).unwrap().connected
    })
    .await;
    // On the lane that reconnected (a heartbeat would take the control
    // lane, which may still be waiting out its own backoff).
    let last = big(sent + 1);
    one.network.send(2, vec![last.clone()]).await;
    loop {
        let message = two.recv().await;
        if message == last {
            break;
        }
    }
    check_bound(&one.handle.stats().raft_lane(2).cloned().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_the_sink_is_bound_are_counted_and_dropped() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let unbound = rafter_quic::QuicNetwork::bind(
        1,
        localhost(),
        TlsMode::MutualTls(ca.issue_node_cert(1).unwrap()),
        test_config(),
    )
    .unwrap();
    let handle = unbound.handle();
    let mut two = Node::bind(&ca, 2, test_config());
    let book = [(1, handle.local_addr().unwrap().to_string())]
        .into_iter()
        .collect();
    two.network.set_members(&book).await;
    two.network.send(1, vec![heartbeat(2, 1, 1)]).await;
    eventually("drop counted", || {
        handle.stats().inbound.messages_dropped_no_sink == 1
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    handle.set_inbound(move |m| drop(tx.send(m))).unwrap();
    assert!(handle.set_inbound(|_| {}).is_err(), "a sink is bound once");
    two.network.send(1, vec![heartbeat(2, 1, 2)]).await;
    assert_eq!(
        within("delivery", rx.recv()).await.unwrap(),
        heartbeat(2, 1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_local_demo_mode_delivers_without_certificates() {
    init_tracing();
    let mut one = Node::bind_with(TlsMode::InsecureLocalDemo, 1, localhost(), test_config());
    let mut two = Node::bind_with(TlsMode::InsecureLocalDemo, 2, localhost(), test_config());
    let book = members(&[&one, &two]);
    one.network.set_members(&book).await;
    two.network.set_members(&book).await;
    one.network.send(2, vec![heartbeat(1, 2, 1)]).await;
    two.network.send(1, vec![heartbeat(2, 1, 2)]).await;
    assert_eq!(two.recv().await, heartbeat(1, 2, 1));
    assert_eq!(one.recv().await, heartbeat(2, 1, 2));
}

/// An append of one entry carrying `payload`.
fn append_with(index: u64, payload: &CommandBytes) -> Message {
    Message::new(
        1,
        2,
        1,
        MessageBody::Append {
            prev_log_id: LogId::new(1, index - 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            }],
            commit: 0,
        },
    )
}

/// Where a sink thread waits until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Opens the gate when dropped, so a failing test never leaves a thread
/// parked in it (the runtime would wait for that thread at shutdown).
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Node 2 with a sink that parks the reader of whatever stream delivers a
/// message `parks` picks (in that message, until the gate opens), and node
/// 1 with node 2 as its member. Parked messages come out of `parked`, the
/// others out of `passed`.
struct ParkedPeer {
    one: Node,
    two: QuicNetwork,
    gate: Arc<Gate>,
    _open_on_exit: OpenOnDrop,
    parked: mpsc::UnboundedReceiver<Message>,
    passed: mpsc::UnboundedReceiver<Message>,
}

impl ParkedPeer {
    async fn start(parks: fn(&Message) -> bool) -> ParkedPeer {
        init_tracing();
        let ca = ClusterCa::generate("test").unwrap();
        let mut one = Node::bind(&ca, 1, test_config());
        let two = QuicNetwork::bind(
            2,
            localhost(),
            TlsMode::MutualTls(ca.issue_node_cert(2).unwrap()),
            test_config(),
        )
        .unwrap();
        let two_handle = two.handle();
        let gate = Arc::new(Gate::default());
        let (parked_tx, parked) = mpsc::unbounded_channel();
        let (passed_tx, passed) = mpsc::unbounded_channel();
        let sink_gate = gate.clone();
        two_handle
            .set_inbound(move |message: Message| {
                if parks(&message) {
                    let _ = parked_tx.send(message);
                    // Parks this stream's reader; block_in_place hands the
                    // worker's other tasks to another thread meanwhile.
                    tokio::task::block_in_place(|| sink_gate.wait());
                } else {
                    let _ = passed_tx.send(message);
                }
            })
            .unwrap();
        one.network
            .set_members(
                &[(2, two_handle.local_addr().unwrap().to_string())]
                    .into_iter()
                    .collect(),
            )
            .await;
        ParkedPeer {
            one,
            two,
            _open_on_exit: OpenOnDrop(gate.clone()),
            gate,
            parked,
            passed,
        }
    }
}

const SNAPSHOT_CHUNKS: u64 = 32;
const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;

/// Chunk `i` of a snapshot, with bytes that differ from chunk to chunk.
fn snapshot_chunk(i: u64) -> Message {
    let data: Vec<u8> = (0..SNAPSHOT_CHUNK_BYTES)
        .map(|j| (i as usize * 31 + j / 7) as u8)
        .collect();
    Message::new(
        1,
        2,
        1,
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(1, 1000),
                membership: Membership::new_voters([(1, "one".into()), (2, "two".into())]),
            },
            offset: i * SNAPSHOT_CHUNK_BYTES as u64,
            data: Bytes::from(data),
            done: i + 1 == SNAPSHOT_CHUNKS,
        },
    )
}

/// Node 1 queues 8 MiB of snapshot chunks, then appends and a heartbeat.
/// Node 2 reads its snapshot stream slowly: its sink holds the reader in the
/// first chunk until the test opens a gate, so QUIC flow control stalls
/// node 1's snapshot writer with most chunks unsent. The appends must all
/// arrive meanwhile, which they can only do on a stream of their own
/// (`stream_class`); then every chunk arrives, intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_on_a_stalled_stream_never_hold_up_appends() {
    let ParkedPeer {
        mut one,
        two,
        gate,
        _open_on_exit,
        parked: mut chunk_rx,
        passed: mut raft_rx,
    } = ParkedPeer::start(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })).await;
    let chunks: Vec<Message> = (0..SNAPSHOT_CHUNKS).map(snapshot_chunk).collect();
    one.network.send(2, chunks.clone()).await;
    const APPENDS: u64 = 200;
    let raft_messages: Vec<Message> = (1..=APPENDS).map(append).collect();
    one.network.send(2, raft_messages.clone()).await;

    for expected in &raft_messages {
        let message = within(
            "Raft traffic while the snapshot stream is stalled",
            raft_rx.recv(),
        )
        .await
        .expect("sink dropped");
        assert_eq!(&message, expected, "Raft traffic out of order");
    }
    // Every append arrived while the reader was held in the first chunk:
    // the last chunk, queued before any append, has not.
    let mut received = Vec::new();
    while let Ok(chunk) = chunk_rx.try_recv() {
        received.push(chunk);
    }
    assert!(
        received.len() <= 1,
        "{} chunks delivered past a parked reader",
        received.len()
    );
    // A lane counts a write when `write_all` returns, which can be after
    // the peer has read it.
    eventually("node 1 counts every append sent", || {
        one.handle
            .stats()
            .raft_lane(2)
            .is_some_and(|l| l.sent_msgs == APPENDS)
    })
    .await;
    let stats = one.handle.stats();
    assert_eq!(stats.raft_lane(2).unwrap().sent_msgs, APPENDS);
    let snapshot_lane = &stats.lanes[&(2, StreamClass::Snapshot)];
    assert!(
        snapshot_lane.sent_msgs < SNAPSHOT_CHUNKS,
        "the snapshot writer was not held back: {snapshot_lane:?}"
    );

    gate.open();
    while received.len() < SNAPSHOT_CHUNKS as usize {
        let chunk = within("the rest of the snapshot", chunk_rx.recv())
            .await
            .expect("sink dropped");
        received.push(chunk);
    }
    assert!(
        received == chunks,
        "snapshot chunks lost, damaged or out of order"
    );
    let snapshot_lane = one.handle.stats().lanes[&(2, StreamClass::Snapshot)].clone();
    assert_eq!(
        snapshot_lane.sent_msgs, SNAPSHOT_CHUNKS,
        "{snapshot_lane:?}"
    );
    assert_eq!(snapshot_lane.dropped_full, 0, "{snapshot_lane:?}");
    drop(two);
}

/// Node 2's sink holds its append stream's reader in the first append (a
/// slow consumer, or one huge append still crossing the link: the same for
/// the stream). Heartbeats, votes and `TimeoutNow` queued behind it must
/// still arrive, or the followers' election timers would run out while the
/// leader is alive; then the appends resume, in order. Before heartbeats
/// had a stream of their own, none of them arrived until the gate opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_append_stream_never_holds_up_heartbeats_and_votes() {
    let ParkedPeer {
        mut one,
        two,
        gate,
        _open_on_exit,
        parked: mut append_rx,
        passed: mut control_rx,
    } = ParkedPeer::start(|m| matches!(m.body, MessageBody::Append { .. })).await;
    one.network.send(2, vec![append(1)]).await;
    let first = within("the first append", append_rx.recv()).await;
    assert_eq!(first, Some(append(1)));
    // The reader is parked in append 1; everything below queues behind it
    // or travels apart.
    one.network.send(2, (2..=50).map(append).collect()).await;
    let control = vec![
        heartbeat(1, 2, 1),
        Message::new(
            1,
            2,
            2,
            MessageBody::VoteRequest {
                last_log_id: LogId::new(1, 50),
                pre_vote: true,
                leader_transfer: false,
            },
        ),
        Message::new(1, 2, 2, MessageBody::TimeoutNow),
        heartbeat(1, 2, 2),
    ];
    one.network.send(2, control.clone()).await;
    for expected in &control {
        let message = within(
            "heartbeats and votes while the append stream is stalled",
            control_rx.recv(),
        )
        .await
        .expect("sink dropped");
        assert_eq!(&message, expected, "control traffic lost or out of order");
    }
    assert!(
        append_rx.try_recv().is_err(),
        "an append passed the parked reader"
    );

    gate.open();
    for index in 2..=50 {
        let message = within("the appends after the gate", append_rx.recv()).await;
        assert_eq!(message, Some(append(index)), "appends out of order or lost");
    }
    // A lane counts a write when `write_all` returns, which can be after
    // the peer has read it.
    eventually("node 1 counts every message sent", || {
        let stats = one.handle.stats();
        stats.lanes[&(2, StreamClass::Control)].sent_msgs == 4
            && stats.raft_lane(2).is_some_and(|l| l.sent_msgs == 50)
    })
    .await;
    let stats = one.handle.stats();
    assert_eq!(stats.lanes[&(2, StreamClass::Control)].sent_msgs, 4);
    assert_eq!(stats.raft_lane(2).unwrap().sent_msgs, 50);
    drop(two);
}

/// Node 2 is up and connected but never reads its stream: QUIC flow control
/// stalls node 1's writer to it. Node 1's queue for node 2 stays within its
/// bounds (the overflow is dropped and counted, not buffered), the
/// connection is not mistaken for a dead one, and node 1 keeps serving node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_peer_that_does_not_read_costs_a_bounded_queue_and_others_are_served() {
    init_tracing();
    let ca = ClusterCa::generate("test").unwrap();
    let config = TransportConfig {
        queue_msgs_max: 64,
        queue_bytes_max: 256 << 10,
        frame_bytes_max: 64 << 10,
        write_bytes_max: 64 << 10,
        ..test_config()
    };
    let mut one = Node::bind(&ca, 1, config.clone());
    let mut three = Node::bind(&ca, 3, test_config());
    // Node 2: completes the handshake of every lane (one connection per
    // stream class) and accepts each lane's stream, then never reads from
    // any. Only the append lane writes before the end, so the first stream
    // accepted is its.
    let stuck = raw_server(&ca, 2);
    let stuck_addr = stuck.local_addr().unwrap();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel::<()>();
    let acceptor = stuck.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let accepted_tx = accepted_tx.clone();
            let mut release_rx = release_rx.clone();
            tokio::spawn(async move {
                let connection = incoming.await.expect("handshake");
                let stream = connection.accept_uni().await.expect("the lane's stream");
                let _ = accepted_tx.send(());
                let _ = release_rx.wait_for(|released| *released).await;
                drop((stream, connection));
            });
        }
    });
    let book = [(2, stuck_addr.to_string()), (3, three.addr().to_string())]
        .into_iter()
        .collect();
    one.network.set_members(&book).await;

    let payload = CommandBytes::from(vec![7u8; 2000]);
    let check_bound = |stats: &LaneStats| {
        assert!(
            stats.queued_msgs_high_water <= config.queue_msgs_max,
            "{stats:?}"
        );
        assert!(
            stats.queued_bytes_high_water <= config.queue_bytes_max,
            "{stats:?}"
        );
        assert!(
            stats.writing_bytes <= config.write_bytes_max as u64,
            "{stats:?}"
        );
    };
    // Far more than the peer's stream window (1.25 MB in quinn) and the
    // queue together: 5,000 frames of 2 KB.
    const FLOOD: u64 = 5000;
    let mut sent = 0;
    while sent < FLOOD {
        let batch = (sent + 1..=sent + 20)
            .map(|index| append_with(index, &payload))
            .collect();
        one.network.send(2, batch).await;
        sent += 20;
        check_bound(&one.handle.stats().raft_lane(2).cloned().unwrap());
        // Let the writer run, so only flow control holds it back.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    within("node 2 accepted the lane's stream", accepted_rx.recv())
        .await
        .unwrap();
    // Every message is accounted for: written, in the stalled write, queued
    // or dropped; none vanished, none is buffered beyond the bounds.
    eventually("the stalled lane's counters add up", || {
        let stats = one.handle.stats().raft_lane(2).cloned().unwrap();
        stats.sent_msgs + stats.writing_msgs as u64 + stats.queued_msgs as u64 + stats.dropped_full
            == FLOOD
    })
    .await;
    let stats = one.handle.stats().raft_lane(2).cloned().unwrap();
    check_bound(&stats);
    assert!(
        stats.dropped_full > 0,
        "the peer never pushed back: {stats:?}"
    );
    assert!(stats.sent_msgs < FLOOD, "{stats:?}");
    assert!(stats.connected, "a slow peer is not a dead one: {stats:?}");
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert_eq!(stats.dropped_unreachable, 0, "{stats:?}");

    // Node 3 is served as usual meanwhile: batches within its queue's
    // bound all arrive, in order.
    for batch in 0..5u64 {
        let to_three: Vec<Message> = (batch * 20 + 1..=batch * 20 + 20)
            .map(|index| {
                let mut message = append(index);
                message.to = 3;
                message
            })
            .collect();
        one.network.send(3, to_three.clone()).await;
        for expected in &to_three {
            assert_eq!(&three.recv().await, expected);
        }
    }
    // A lane counts a write when `write_all` returns, which can be after
    // the peer has read it.
    eventually("node 1 counts every append to node 3", || {
        one.handle
            .stats()
            .raft_lane(3)
            .is_some_and(|l| l.sent_msgs == 100)
    })
    .await;
    let lane_three = one.handle.stats().raft_lane(3).cloned().unwrap();
    assert_eq!(lane_three.sent_msgs, 100, "{lane_three:?}");
    assert_eq!(lane_three.dropped_full, 0, "{lane_three:?}");
    // And node 2's queue still holds the line.
    one.network
        .send(
            2,
            vec![
                append_with(FLOOD + 1, &payload),
                append_with(FLOOD + 2, &payload),
            ],
        )
        .await;
    let stats = one.handle.stats().raft_lane(2).cloned().unwrap();
    check_bound(&stats);
    assert!(stats.connected, "{stats:?}");
    let _ = release_tx.send(true);
}
