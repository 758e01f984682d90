//! Quorum arithmetic: pure functions over voter sets, acknowledged indexes
//! and votes. No messages, no state.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Membership, NodeId};

/// The outcome of an election so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// The largest index that a majority of `voters` has acknowledged, where
/// `acked(id)` is what `id` acknowledged. An empty set imposes no constraint
/// (`u64::MAX`), so that a non-joint configuration's empty outgoing half
/// drops out of the `min` in [`committed_index`].
pub(crate) fn majority_index(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut indexes: Vec<u64> = voters.iter().map(|&id| acked(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2 + 1)-th largest value is held by a majority.
    indexes[voters.len() / 2]
}

/// The largest index acknowledged by a quorum of `membership`: a majority of
/// the voters and, in a joint configuration, of the outgoing voters too
/// (Raft dissertation §4.3).
pub(crate) fn committed_index(membership: &Membership, acked: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = majority_index(&membership.voters, &acked);
    let outgoing = majority_index(&membership.voters_outgoing, &acked);
    let index = incoming.min(outgoing);
    debug_assert!(index != u64::MAX, "a configuration always has voters");
    index
}

fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The result of an election in `membership` given the `votes` so far: won
/// only if both halves of a joint configuration are won, lost if either is.
pub(crate) fn vote_result(membership: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    match (
        majority_vote(&membership.voters, votes),
        majority_vote(&membership.voters_outgoing, votes),
    ) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn membership(voters: &[u64], outgoing: &[u64]) -> Membership {
        let mut m = Membership::new_voters(voters.iter().map(|&id| (id, String::new())));
        m.voters_outgoing = outgoing.iter().copied().collect();
        m
    }

    /// The dumb model: the largest index `i` such that more than half of the
    /// voters acknowledged at least `i`.
    fn brute_force_majority(acked: &[u64]) -> u64 {
        let candidates = acked.iter().copied().chain([0]);
        candidates
            .filter(|&i| acked.iter().filter(|&&a| a >= i).count() * 2 > acked.len())
            .max()
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn majority_index_matches_brute_force(acked in proptest::collection::vec(0u64..20, 1..8)) {
            let voters: BTreeSet<u64> = (1..=acked.len() as u64).collect();
            let got = majority_index(&voters, |id| acked[(id - 1) as usize]);
            prop_assert_eq!(got, brute_force_majority(&acked));
        }

        #[test]
        fn vote_result_matches_brute_force(votes in proptest::collection::vec(proptest::option::of(any::<bool>()), 1..8)) {
            let m = membership(&(1..=votes.len() as u64).collect::<Vec<_>>(), &[]);
            let map: BTreeMap<u64, bool> = votes.iter().enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as u64 + 1, v))).collect();
            let yes = votes.iter().filter(|v| **v == Some(true)).count();
            let undecided = votes.iter().filter(|v| v.is_none()).count();
            let expected = if yes * 2 > votes.len() { VoteResult::Won }
                else if (yes + undecided) * 2 > votes.len() { VoteResult::Pending }
                else { VoteResult::Lost };
            prop_assert_eq!(vote_result(&m, &map), expected);
        }
    }

    #[test]
    fn joint_commit_needs_both_majorities() {
        // Old {1,2,3}, new {3,4,5}: 1,2 far ahead but the new half lags.
        let m = membership(&[3, 4, 5], &[1, 2, 3]);
        let acked = |id| match id {
            1 | 2 => 10,
            3 => 7,
            _ => 2,
        };
        assert_eq!(committed_index(&m, acked), 2);
        let votes = BTreeMap::from([(1, true), (2, true), (3, true)]);
        assert_eq!(vote_result(&m, &votes), VoteResult::Pending);
        let votes = BTreeMap::from([(1, true), (2, true), (4, false), (5, false)]);
        assert_eq!(vote_result(&m, &votes), VoteResult::Lost);
    }
}
