//! Membership changes as pure functions: each returns a new configuration
//! and never mutates the old one.
//!
//! Voter changes go through joint consensus (Raft dissertation §4.3): the
//! first entry holds C_old,new (`voters` = new, `voters_outgoing` = old), and
//! once it commits the leader appends C_new. Learners do not count in any
//! quorum, so adding or removing one is a single step.

use std::collections::BTreeSet;

use crate::error::MembershipError;
use crate::types::{Membership, NodeId};

/// A requested change of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipChange {
    /// Add a non-voting member at `addr`.
    AddLearner { id: NodeId, addr: String },
    /// Make exactly these nodes the voters (each already a voter or learner).
    SetVoters(BTreeSet<NodeId>),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// The configuration `change` leads to from `current` (not joint).
pub(crate) fn apply(
    current: &Membership,
    change: &MembershipChange,
) -> Result<Membership, MembershipError> {
    assert!(
        !current.is_joint(),
        "a change starts only from a non-joint configuration"
    );
    match change {
        MembershipChange::AddLearner { id, addr } => {
            if *id == 0 {
                return Err(MembershipError::Invalid("node id 0 is reserved".into()));
            }
            if current.members().contains(id) {
                return Err(MembershipError::AlreadyMember(*id));
            }
            let mut next = current.clone();
            next.learners.insert(*id);
            next.nodes.insert(*id, addr.clone());
            Ok(next)
        }
        MembershipChange::SetVoters(voters) => {
            if voters.is_empty() {
                return Err(MembershipError::NoVoters);
            }
            if let Some(unknown) = voters.iter().find(|id| !current.members().contains(id)) {
                return Err(MembershipError::UnknownNode(*unknown));
            }
            if *voters == current.voters {
                return Err(MembershipError::Invalid(
                    "the voters are already these".into(),
                ));
            }
            let mut next = current.clone();
            next.voters_outgoing = current.voters.clone();
            next.voters = voters.clone();
            // A promoted learner is a voter now; a demoted voter stays a
            // member only through the outgoing half until the change ends.
            next.learners.retain(|id| !voters.contains(id));
            Ok(next)
        }
        MembershipChange::Remove(id) => {
            if current.learners.contains(id) {
                let mut next = current.clone();
                next.learners.remove(id);
                next.nodes.remove(id);
                Ok(next)
            } else if current.voters.contains(id) {
                let mut voters = current.voters.clone();
                voters.remove(id);
                apply(current, &MembershipChange::SetVoters(voters))
            } else {
                Err(MembershipError::UnknownNode(*id))
            }
        }
    }
}

/// C_new: the joint configuration `joint` without its outgoing half, and
/// without the addresses of nodes that are no longer members.
pub(crate) fn leave_joint(joint: &Membership) -> Membership {
    assert!(
        joint.is_joint(),
        "leaving a configuration that is not joint"
    );
    let mut next = joint.clone();
    next.voters_outgoing.clear();
    let members = next.members();
    next.nodes.retain(|id, _| members.contains(id));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::new_voters((1..=3).map(|id| (id, format!("n{id}"))))
    }

    #[test]
    fn voter_changes_go_through_a_joint_configuration() {
        let current = three();
        let with_learner = apply(
            &current,
            &MembershipChange::AddLearner {
                id: 4,
                addr: "n4".into(),
            },
        )
        .unwrap();
        assert_eq!(current, three(), "the old configuration is untouched");
        let joint = apply(
            &with_learner,
            &MembershipChange::SetVoters([1, 2, 4].into()),
        )
        .unwrap();
        assert!(joint.is_joint());
        assert_eq!(joint.voters_outgoing, [1, 2, 3].into());
        assert!(joint.learners.is_empty());
        joint.validate().unwrap();
        let new = leave_joint(&joint);
        assert_eq!(new.voters, [1, 2, 4].into());
        assert!(
            !new.nodes.contains_key(&3),
            "removed node's address dropped"
        );
        new.validate().unwrap();
    }

    #[test]
    fn invalid_changes_are_typed_errors() {
        let current = three();
        let err = |c| apply(&current, &c).unwrap_err();
        assert_eq!(
            err(MembershipChange::SetVoters(BTreeSet::new())),
            MembershipError::NoVoters
        );
        assert_eq!(
            err(MembershipChange::SetVoters([1, 9].into())),
            MembershipError::UnknownNode(9)
        );
        assert_eq!(
            err(MembershipChange::Remove(9)),
            MembershipError::UnknownNode(9)
        );
        assert_eq!(
            err(MembershipChange::AddLearner {
                id: 2,
                addr: "x".into()
            }),
            MembershipError::AlreadyMember(2)
        );
        let single = Membership::new_voters([(1, "n1".to_string())]);
        assert_eq!(
            apply(&single, &MembershipChange::Remove(1)),
            Err(MembershipError::NoVoters)
        );
    }

    #[test]
    fn removing_a_learner_is_one_step() {
        let with_learner = apply(
            &three(),
            &MembershipChange::AddLearner {
                id: 4,
                addr: "n4".into(),
            },
        )
        .unwrap();
        let removed = apply(&with_learner, &MembershipChange::Remove(4)).unwrap();
        assert!(!removed.is_joint());
        assert_eq!(removed, three());
    }
}
