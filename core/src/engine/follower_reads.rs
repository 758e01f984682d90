//! Read indexes on a follower (dissertation §6.4, etcd-raft's
//! `MsgReadIndex`): a follower asks its leader, which runs the request
//! through its own ReadIndex round and answers with the read index; the
//! caller then waits until this node has applied it. Linearizable reads
//! thus spread over the cluster, each costing the leader a share of one
//! heartbeat round and a message each way.

use super::read_index::{ReadAnswers, Reader};
use super::*;

impl Engine {
    /// A non-leader's read: asks the leader it knows, or refuses without
    /// one (`NotLeader`, to retry once an election is over).
    pub(super) fn read_index_from_leader(&mut self, id: u64) {
        assert!(self.role != Role::Leader, "the leader reads itself");
        let Some(leader) = self.leader else {
            self.out.reads.push((
                id,
                Err(ReadError::NotLeader {
                    leader_hint: None,
                    leader_addr: None,
                }),
            ));
            return;
        };
        assert!(
            !self.follower_reads.contains_key(&id),
            "read id {id} asked twice"
        );
        self.follower_reads.insert(id, self.ticks);
        self.send(leader, MessageBody::ReadIndexRequest { request: id });
    }

    /// The leader: a follower asks for a read index. It joins the next
    /// round with this node's own reads.
    pub(super) fn handle_read_index_request(&mut self, from: NodeId, request: u64) {
        if self.role != Role::Leader {
            self.send(
                from,
                MessageBody::ReadIndexResponse {
                    request,
                    index: None,
                },
            );
            return;
        }
        self.reads.request(Reader::Remote { from, request });
    }

    /// The follower: the leader's answer.
    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        request: u64,
        index: Option<u64>,
    ) {
        if self.leader != Some(from) || self.follower_reads.remove(&request).is_none() {
            // Failed already (the leader changed, or it took too long).
            return;
        }
        let result = index.ok_or(ReadError::LeadershipLost);
        self.out.reads.push((request, result));
    }

    /// Routes the answers of finished or failed rounds: this node's callers
    /// through `Actions::reads`, followers' in a `ReadIndexResponse`.
    pub(super) fn answer_reads(&mut self, answers: ReadAnswers) {
        for (reader, result) in answers {
            match reader {
                Reader::Local(id) => self.out.reads.push((id, result)),
                Reader::Remote { from, request } => self.send(
                    from,
                    MessageBody::ReadIndexResponse {
                        request,
                        index: result.ok(),
                    },
                ),
            }
        }
    }

    /// Fails every read asked of a leader: it changed, or this node
    /// campaigns. The callers may retry.
    pub(super) fn fail_follower_reads(&mut self) {
        let ids: Vec<u64> = std::mem::take(&mut self.follower_reads)
            .into_keys()
            .collect();
        self.out.reads.extend(
            ids.into_iter()
                .map(|id| (id, Err(ReadError::LeadershipLost))),
        );
    }

    /// Fails reads the leader has not answered within the longest election
    /// timeout (a lost request or answer): the caller may retry, and the
    /// request's memory is bounded by what arrives in that time.
    pub(super) fn expire_follower_reads(&mut self) {
        let expired = take_unanswered(
            &mut self.follower_reads,
            |&asked| asked,
            self.ticks,
            self.config.election_ticks_max,
        );
        for (id, _) in expired {
            self.out.reads.push((id, Err(ReadError::LeadershipLost)));
        }
    }
}

/// Removes and returns the requests to a leader asked (by `asked`) more than
/// `patience` ticks before `now`, in id order: follower reads and forwarded
/// batches expire alike.
pub(super) fn take_unanswered<V>(
    asked_of_leader: &mut BTreeMap<u64, V>,
    asked: impl Fn(&V) -> u64,
    now: u64,
    patience: u64,
) -> Vec<(u64, V)> {
    let expired: Vec<u64> = asked_of_leader
        .iter()
        .filter(|&(_, value)| now - asked(value) > patience)
        .map(|(&id, _)| id)
        .collect();
    expired
        .into_iter()
        .filter_map(|id| asked_of_leader.remove(&id).map(|value| (id, value)))
        .collect()
}
