//! Proptest strategies for [`Message`]s and their parts, with the numbers
//! weighted towards the edges (0, 1, `u64::MAX` and around), which a uniform
//! `u64` would reach once in 2^64 runs.
//!
//! Two families: the `valid_*` strategies (and [`membership`],
//! [`free_body`]) build only what `rafter::codec::decode_message` must
//! accept, so a codec or a frame layer can check that every one of them
//! round-trips; the `any_*` strategies build anything the types can hold,
//! valid or not, to check that a decoder rejects exactly the invalid ones
//! and never panics. The codec's tests check that [`valid_message`] reaches
//! every `MessageBody` and `EntryPayload` variant and the top of the index
//! range.
//!
//! Every strategy is boxed: unboxed, the nested value trees overflow the
//! stack of a debug test thread.

use crate::CommandBytes;
use bytes::Bytes;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

use crate::{
    AppendOutcome, Entry, EntryPayload, ForwardOutcome, ForwardRefusal, LogId, Membership, Message,
    MessageBody, SnapshotMeta, SnapshotOutcome,
};

/// Any `u64`, weighted towards the edges: 0, 1, `u64::MAX`, and the 16
/// values next to each end.
pub fn number() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        0u64..16,
        (u64::MAX - 16)..=u64::MAX,
        any::<u64>(),
    ]
    .boxed()
}

/// A term a valid message may carry: like [`number`], below
/// [`crate::codec::TERM_LIMIT`] (with the values next to it).
pub fn term() -> BoxedStrategy<u64> {
    let limit = crate::codec::TERM_LIMIT;
    prop_oneof![Just(0), Just(1), 0u64..16, (limit - 16)..limit, 0..limit,].boxed()
}

/// A node id: like [`number`], but never 0 (no node has id 0).
pub fn node_id() -> BoxedStrategy<u64> {
    number().prop_map(|id| id.max(1)).boxed()
}

/// Any log id: term and index from [`number`].
pub fn log_id() -> BoxedStrategy<LogId> {
    (number(), number())
        .prop_map(|(term, index)| LogId::new(term, index))
        .boxed()
}

/// Any answer to a forwarded batch the codec accepts (an append names an
/// index of at least 1).
pub fn forward_outcome() -> BoxedStrategy<ForwardOutcome> {
    prop_oneof![
        log_id().prop_map(|first| ForwardOutcome::Appended {
            first: LogId::new(first.term, first.index.max(1)),
        }),
        Just(ForwardOutcome::Refused(ForwardRefusal::NotLeader)),
        number().prop_map(|gap| ForwardOutcome::Refused(ForwardRefusal::TooManyRequests { gap })),
        Just(ForwardOutcome::Refused(ForwardRefusal::TransferInProgress)),
        Just(ForwardOutcome::Refused(ForwardRefusal::LeaderNotMember)),
        (number(), number()).prop_map(|(size, max)| ForwardOutcome::Refused(
            ForwardRefusal::RequestTooLarge { size, max }
        )),
        (number(), number()).prop_map(|(count, max)| ForwardOutcome::Refused(
            ForwardRefusal::TooManyCommands { count, max }
        )),
    ]
    .boxed()
}

/// A node address: up to 24 characters of host-and-port alphabet, possibly
/// empty (the codec does not parse addresses).
pub fn address() -> BoxedStrategy<String> {
    "[a-z0-9.:-]{0,24}".boxed()
}

/// A membership that passes `Membership::validate`: at least one voter,
/// learners disjoint from the voters, an address for every member (and
/// perhaps for a few non-members).
pub fn membership() -> BoxedStrategy<Membership> {
    (
        btree_set(node_id(), 1..5),
        btree_set(node_id(), 0..4),
        btree_set(node_id(), 0..4),
        vec(address(), 1..12),
        btree_map(node_id(), address(), 0..2),
    )
        .prop_map(|(voters, voters_outgoing, learners, addresses, nodes)| {
            let learners = learners
                .into_iter()
                .filter(|id| !voters.contains(id) && !voters_outgoing.contains(id))
                .collect();
            let mut membership = Membership {
                voters,
                voters_outgoing,
                learners,
                nodes,
            };
            for (id, address) in membership
                .members()
                .into_iter()
                .zip(addresses.iter().cycle())
            {
                membership.nodes.insert(id, address.clone());
            }
            membership
        })
        .boxed()
}

/// Half valid, half anything: rules after the membership check are
/// reached too.
pub fn maybe_valid_membership() -> BoxedStrategy<Membership> {
    prop_oneof![membership(), any_membership()].boxed()
}

/// Any membership the type can hold, mostly invalid.
pub fn any_membership() -> BoxedStrategy<Membership> {
    (
        btree_set(number(), 0..4),
        btree_set(number(), 0..3),
        btree_set(number(), 0..3),
        btree_map(number(), address(), 0..4),
    )
        .prop_map(|(voters, voters_outgoing, learners, nodes)| Membership {
            voters,
            voters_outgoing,
            learners,
            nodes,
        })
        .boxed()
}

/// An entry payload of any kind: blank, a command of up to 299 bytes (past
/// 127 bytes the codec's length prefix takes two bytes), or a membership
/// drawn from `membership` ([`membership`] for valid payloads,
/// [`maybe_valid_membership`] for anything).
pub fn payload(membership: BoxedStrategy<Membership>) -> BoxedStrategy<EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Blank),
        vec(any::<u8>(), 0..300).prop_map(|data| EntryPayload::Command(CommandBytes::from(data))),
        membership.prop_map(|m| EntryPayload::Membership(Box::new(m))),
    ]
    .boxed()
}

/// A valid append body, with the message term it needs: consecutive
/// entries after `prev_log_id` (which may sit anywhere up to
/// `u64::MAX − entries`), terms non-decreasing from `prev_log_id.term` up
/// to the message's term.
pub fn valid_append() -> BoxedStrategy<(u64, MessageBody)> {
    (
        number(),
        term(),
        term(),
        vec((payload(membership()), any::<u64>()), 0..6),
        number(),
    )
        .prop_map(|(prev_index, term_a, term_b, steps, commit)| {
            let prev_term = term_a.min(term_b);
            let message_term = term_a.max(term_b);
            let prev_index = prev_index.min(u64::MAX - steps.len() as u64);
            let span = message_term - prev_term;
            let mut terms: Vec<u64> = steps
                .iter()
                .map(|(_, r)| prev_term + span.checked_add(1).map_or(*r, |n| r % n))
                .collect();
            terms.sort_unstable();
            // No overflow: prev_index <= u64::MAX - steps.len().
            let entries = steps
                .into_iter()
                .zip(terms)
                .enumerate()
                .map(|(i, ((payload, _), term))| Entry {
                    term,
                    index: prev_index + 1 + i as u64,
                    payload,
                })
                .collect();
            let body = MessageBody::Append {
                prev_log_id: LogId::new(prev_term, prev_index),
                entries,
                commit,
            };
            (message_term, body)
        })
        .boxed()
}

/// A valid snapshot chunk: index at least 1, a valid membership, and up
/// to 299 bytes of data ending at or before offset `u64::MAX`.
pub fn valid_install_snapshot() -> BoxedStrategy<MessageBody> {
    (
        number(),
        node_id(),
        membership(),
        number(),
        vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(
            |(term, index, membership, offset, data, done)| MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    last_log_id: LogId::new(term, index),
                    membership,
                },
                offset: offset.min(u64::MAX - data.len() as u64),
                data: Bytes::from(data),
                done,
            },
        )
        .boxed()
}

/// The bodies with no cross-field rule: every value is valid.
pub fn free_body() -> BoxedStrategy<MessageBody> {
    let snapshot_outcome = prop_oneof![
        number().prop_map(|next_offset| SnapshotOutcome::Received { next_offset }),
        Just(SnapshotOutcome::Installed),
        Just(SnapshotOutcome::Restart),
    ];
    prop_oneof![
        (any::<bool>(), log_id(), any::<bool>()).prop_map(
            |(pre_vote, last_log_id, leader_transfer)| MessageBody::VoteRequest {
                pre_vote,
                last_log_id,
                leader_transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
        number().prop_map(|match_index| MessageBody::AppendResponse {
            outcome: AppendOutcome::Success { match_index },
        }),
        (number(), log_id()).prop_map(|(rejected_index, hint)| {
            MessageBody::AppendResponse {
                outcome: AppendOutcome::Reject {
                    rejected_index,
                    hint,
                },
            }
        }),
        (number(), number())
            .prop_map(|(commit, read_seq)| MessageBody::Heartbeat { commit, read_seq }),
        number().prop_map(|read_seq| MessageBody::HeartbeatResponse { read_seq }),
        Just(MessageBody::TimeoutNow),
        (log_id(), snapshot_outcome).prop_map(|(snapshot, outcome)| {
            MessageBody::InstallSnapshotResponse { snapshot, outcome }
        }),
        number().prop_map(|request| MessageBody::ReadIndexRequest { request }),
        (number(), proptest::option::of(number()))
            .prop_map(|(request, index)| MessageBody::ReadIndexResponse { request, index }),
        (number(), vec(vec(any::<u8>(), 0..100), 1..4)).prop_map(|(batch, commands)| {
            MessageBody::ForwardProposals {
                batch,
                commands: commands.into_iter().map(CommandBytes::from).collect(),
            }
        }),
        (number(), forward_outcome())
            .prop_map(|(batch, outcome)| MessageBody::ForwardResponse { batch, outcome }),
    ]
    .boxed()
}

/// Any message `decode_message` must accept: [`valid_append`],
/// [`valid_install_snapshot`] or [`free_body`] between two nonzero node ids.
pub fn valid_message() -> BoxedStrategy<Message> {
    let body = prop_oneof![
        valid_append(),
        (term(), valid_install_snapshot()),
        (term(), free_body()),
    ];
    (node_id(), node_id(), body)
        .prop_map(|(from, to, (term, body))| Message {
            from,
            to,
            term,
            body,
        })
        .boxed()
}

/// Any message the types can hold: appends with any indexes and terms
/// (including after `u64::MAX`), invalid memberships, snapshot chunks at
/// index 0 or running past `u64::MAX`, node id 0.
pub fn any_message() -> BoxedStrategy<Message> {
    let append = (
        log_id(),
        vec(
            (number(), number(), payload(maybe_valid_membership())),
            0..4,
        ),
        number(),
    )
        .prop_map(|(prev_log_id, entries, commit)| MessageBody::Append {
            prev_log_id,
            entries: entries
                .into_iter()
                .map(|(term, index, payload)| Entry {
                    term,
                    index,
                    payload,
                })
                .collect(),
            commit,
        });
    let snapshot = (
        log_id(),
        maybe_valid_membership(),
        number(),
        vec(any::<u8>(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(last_log_id, membership, offset, data, done)| {
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    last_log_id,
                    membership,
                },
                offset,
                data: Bytes::from(data),
                done,
            }
        });
    let body = prop_oneof![append, snapshot, free_body()];
    prop_oneof![
        valid_message(),
        (number(), number(), number(), body).prop_map(|(from, to, term, body)| Message {
            from,
            to,
            term,
            body,
        }),
    ]
    .boxed()
}

/// An append whose one entry would follow index `u64::MAX`: invalid. It
/// once overflowed the codec's index arithmetic (a panic in debug builds on
/// bytes from the network), so every decoder is tested with it.
pub fn append_past_the_last_index() -> Message {
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_log_id: LogId::new(3, u64::MAX),
            entries: vec![Entry {
                term: 3,
                index: 1,
                payload: EntryPayload::Blank,
            }],
            commit: 0,
        },
    }
}
