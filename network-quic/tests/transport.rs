//! Transport scenarios on 127.0.0.1: delivery, authentication, queue
//! bounds and bad input. Every wait has a deadline (`common::PATIENCE`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use rafter::codec::FORMAT_VERSION;
use rafter::{Entry, EntryPayload, LogId, Message, MessageBody, RaftNetwork};
use rafter_quic::frame::encode_frame;
use rafter_quic::{node_server_name, ClusterCa, TlsMode, TransportConfig};

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
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_id: LogId::new(1, index - 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(Bytes::from(index.to_be_bytes().to_vec())),
            }],
            commit: index - 1,
        },
    }
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

    let payload = Bytes::from(vec![7u8; 2000]);
    let big = |index: u64| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_id: LogId::new(1, index - 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            }],
            commit: 0,
        },
    };
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
    one.network.send(2, vec![heartbeat(1, 2, 99)]).await;
    loop {
        let message = two.recv().await;
        if message == heartbeat(1, 2, 99) {
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
