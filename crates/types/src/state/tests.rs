//! Unit tests of `ClusterState::apply` and admission control.

use super::*;

fn req(cmd: Command) -> Request {
    Request { now_ms: 1_000, cmd }
}

fn boot() -> ClusterState {
    let mut s = ClusterState::default();
    let r = s.apply(
        1,
        &req(Command::Bootstrap {
            cluster_id: 7,
            id: 1,
            name: "n1".into(),
            addr: "127.0.0.1:1".into(),
            max_voters: 5,
        }),
    );
    assert!(r.is_ok(), "{r:?}");
    s
}

fn add(s: &mut ClusterState, idx: u64, id: NodeId, name: &str) -> Response {
    s.apply(
        idx,
        &req(Command::AddMember {
            id,
            name: name.into(),
            addr: format!("127.0.0.1:{}", 100 + id),
        }),
    )
}

#[test]
fn bootstrap_makes_one_up_voter() {
    let s = boot();
    assert_eq!(s.cluster_id, 7);
    assert_eq!(s.voter_ids().into_iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.running_nodes(), vec!["n1"]);
    assert!(s.stopped_nodes().is_empty());
    let mut again = s.clone();
    let r = again.apply(
        2,
        &req(Command::Bootstrap {
            cluster_id: 8,
            id: 2,
            name: "n2".into(),
            addr: "127.0.0.1:2".into(),
            max_voters: 5,
        }),
    );
    assert_eq!(r.rejected, Some(Reject::AlreadyBootstrapped));
    assert_eq!(again.cluster_id, 7);
}

#[test]
fn commands_before_bootstrap_are_refused() {
    let mut s = ClusterState::default();
    let r = add(&mut s, 1, 2, "n2");
    assert_eq!(r.rejected, Some(Reject::NotBootstrapped));
    assert!(s.members.is_empty());
}

#[test]
fn name_in_use_only_while_the_old_member_is_not_down() {
    let mut s = boot();
    assert!(add(&mut s, 2, 2, "n2").is_ok());
    let r = add(&mut s, 3, 3, "n2");
    assert_eq!(r.rejected, Some(Reject::NameInUse { name: "n2".into() }));
    assert!(s.apply(4, &req(Command::MarkDown { id: 2 })).is_ok());
    assert!(add(&mut s, 5, 3, "n2").is_ok());
    assert!(!s.members.contains_key(&2));
    assert_eq!(s.member_by_name("n2").map(|m| m.id), Some(3));
    s.check_invariants().unwrap();
}

#[test]
fn stale_entries_change_nothing() {
    let mut s = boot();
    assert!(add(&mut s, 5, 2, "n2").is_ok());
    let before = s.clone();
    let r = add(&mut s, 5, 3, "n3");
    assert!(!r.is_ok());
    assert_eq!(s, before);
}

#[test]
fn set_roles_mirrors_raft_and_respects_max_voters() {
    let mut s = boot();
    for (i, id) in (2..=6).enumerate() {
        assert!(add(&mut s, 2 + i as u64, id, &format!("n{id}")).is_ok());
    }
    let r = s.apply(
        10,
        &req(Command::SetRoles {
            voters: vec![1, 2, 3, 4, 5, 6],
            learners: vec![],
        }),
    );
    assert_eq!(r.rejected, Some(Reject::TooManyVoters { max_voters: 5 }));
    assert_eq!(s.voter_ids().len(), 1);
    let r = s.apply(
        11,
        &req(Command::SetRoles {
            voters: vec![1, 2, 3],
            learners: vec![4, 5, 6],
        }),
    );
    assert!(r.is_ok());
    assert_eq!(s.voter_ids().len(), 3);
    s.check_invariants().unwrap();
}

#[test]
fn promotion_keeps_an_odd_number_of_voters() {
    let mut s = boot();
    assert!(add(&mut s, 2, 2, "n2").is_ok());
    assert!(s
        .apply(3, &req(Command::MarkUp { id: 2, addr: None }))
        .is_ok());
    assert!(
        s.learners_to_promote().is_empty(),
        "two nodes keep one voter"
    );
    assert!(add(&mut s, 4, 3, "n3").is_ok());
    assert!(s
        .apply(5, &req(Command::MarkUp { id: 3, addr: None }))
        .is_ok());
    assert_eq!(s.learners_to_promote(), vec![2, 3]);
}

#[test]
fn removing_a_voter_refused_when_quorum_would_be_lost() {
    let mut s = boot();
    add(&mut s, 2, 2, "n2");
    add(&mut s, 3, 3, "n3");
    s.apply(4, &req(Command::MarkUp { id: 2, addr: None }));
    s.apply(5, &req(Command::MarkUp { id: 3, addr: None }));
    s.apply(
        6,
        &req(Command::SetRoles {
            voters: vec![1, 2, 3],
            learners: vec![],
        }),
    );
    s.apply(7, &req(Command::MarkDown { id: 3 }));
    // n2 leaving would leave {n1, n3} with only n1 up: below the quorum of two.
    assert_eq!(s.plan_remove(2), Err(Reject::WouldLoseQuorum));
    // Removing the down voter n3 leaves {n1, n2}, both up.
    let plan = s.plan_remove(3).unwrap();
    assert_eq!(plan.voters.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.plan_remove(9), Err(Reject::NoSuchMember { id: 9 }));
}

#[test]
fn removing_the_only_voter_promotes_an_up_learner() {
    let mut s = boot();
    add(&mut s, 2, 2, "n2");
    s.apply(3, &req(Command::MarkUp { id: 2, addr: None }));
    let plan = s.plan_remove(1).unwrap();
    assert_eq!(plan.promoted, Some(2));
    assert_eq!(plan.voters.into_iter().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn events_follow_changes_with_their_revision() {
    let mut s = boot();
    add(&mut s, 2, 2, "n2");
    s.apply(
        3,
        &req(Command::MarkUp {
            id: 2,
            addr: Some("127.0.0.1:9".into()),
        }),
    );
    s.apply(4, &req(Command::MarkDown { id: 2 }));
    s.apply(
        5,
        &req(Command::RemoveMember {
            id: 2,
            reason: RemoveReason::Removed,
        }),
    );
    let evs = s.events_after(1).unwrap();
    let kinds: Vec<_> = evs.iter().map(|e| (e.revision, e.kind.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (2, EventKind::MemberJoined),
            (
                3,
                EventKind::AddressChanged {
                    addr: "127.0.0.1:9".into()
                }
            ),
            (3, EventKind::MemberUp),
            (4, EventKind::MemberDown),
            (5, EventKind::MemberRemoved),
        ]
    );
    assert!(evs.iter().all(|e| e.name == "n2"));
}

#[test]
fn bad_names_and_addresses_are_rejected() {
    let mut s = boot();
    let r = s.apply(
        2,
        &req(Command::AddMember {
            id: 2,
            name: "bad name".into(),
            addr: "127.0.0.1:1".into(),
        }),
    );
    assert!(matches!(r.rejected, Some(Reject::InvalidArgument { .. })));
    let r = s.apply(
        3,
        &req(Command::AddMember {
            id: 2,
            name: "n2".into(),
            addr: "nowhere".into(),
        }),
    );
    assert!(matches!(r.rejected, Some(Reject::InvalidArgument { .. })));
    assert_eq!(s.members.len(), 1);
}

#[test]
fn events_after_reports_compaction_only_when_events_were_dropped() {
    let mut s = boot();
    // Entries that make no event leave gaps: that is not compaction.
    s.apply(5, &req(Command::Noop));
    assert_eq!(
        s.events_after(0).map(|v| v.len()),
        Some(2),
        "member_joined, leader_changed"
    );
    let mut idx = 6;
    while s.compacted_to == 0 {
        add(&mut s, idx, 2, "n2");
        s.apply(
            idx + 1,
            &req(Command::RemoveMember {
                id: 2,
                reason: RemoveReason::Left,
            }),
        );
        idx += 2;
    }
    assert!(s.events_after(0).is_none(), "the first events are gone");
    assert!(s.events_after(s.compacted_to - 1).is_none());
    let from_kept = s.events_after(s.compacted_to).unwrap();
    assert!(from_kept.iter().all(|e| e.revision > s.compacted_to));
    assert_eq!(s.events.len(), crate::limits::MAX_EVENTS_RETAINED);
    s.check_invariants().unwrap();
}

#[test]
fn was_removed_needs_evidence_not_absence() {
    let mut s = boot();
    assert!(!s.was_removed(2), "never seen is not removed");
    add(&mut s, 2, 2, "n2");
    assert!(!s.was_removed(2));
    s.apply(
        3,
        &req(Command::RemoveMember {
            id: 2,
            reason: RemoveReason::Removed,
        }),
    );
    assert!(s.was_removed(2));
    assert!(!s.was_removed(1));
}

#[test]
fn a_long_down_voter_is_replaced_by_the_oldest_up_learner() {
    let mut s = boot();
    add(&mut s, 2, 2, "n2");
    add(&mut s, 3, 3, "n3");
    s.apply(4, &req(Command::MarkUp { id: 2, addr: None }));
    s.apply(5, &req(Command::MarkUp { id: 3, addr: None }));
    s.apply(
        6,
        &req(Command::SetRoles {
            voters: vec![1, 2],
            learners: vec![3],
        }),
    );
    assert_eq!(s.voter_to_replace(u64::MAX), None, "no voter is down");
    s.apply(
        7,
        &Request {
            now_ms: 5_000,
            cmd: Command::MarkDown { id: 2 },
        },
    );
    assert_eq!(s.voter_to_replace(5_000), None, "not down long enough");
    assert_eq!(s.voter_to_replace(5_001), Some((2, 3)));
    s.apply(8, &req(Command::MarkDown { id: 3 }));
    assert_eq!(s.voter_to_replace(u64::MAX), None, "no up learner to seat");
}

#[test]
fn a_batch_gives_every_operation_its_own_increasing_revision() {
    use crate::kv::KvOp;
    use crate::lock::LockOp;
    let mut s = boot();
    let acquire = |owner: &str| {
        Command::Lock(LockOp::Acquire {
            resource: "r".into(),
            owner: owner.into(),
            ttl_ms: 1000,
            wait_ms: 0,
        })
    };
    let put = |v: &str| {
        Command::Kv(KvOp::Put {
            key: "k".into(),
            value: v.as_bytes().to_vec(),
        })
    };
    let data = |c: Command| DataCommand::try_from(c).unwrap();
    let batch = Command::Batch(vec![
        data(acquire("a")),
        data(acquire("b")),
        data(put("1")),
        data(put("2")),
    ]);
    let r = s.apply(2, &req(batch));
    let Outcome::Batch(results) = r.outcome else {
        panic!("{r:?}")
    };
    let revs: Vec<u64> = results.iter().map(|o| o.revision).collect();
    assert_eq!(revs, (0..4).map(|k| op_revision(2, k)).collect::<Vec<_>>());
    // Each operation is accepted or refused on its own.
    assert_eq!(
        results[0].outcome,
        Outcome::Granted {
            token: op_revision(2, 0),
            expires_ms: 2000
        }
    );
    assert!(matches!(results[1].rejected, Some(Reject::LockHeld { .. })));
    assert_eq!(s.kv.entries["k"].mod_revision, op_revision(2, 3));
    assert_eq!(s.kv.entries["k"].create_revision, op_revision(2, 2));
    assert!(s.data_revision() >= op_revision(2, 3));
    assert!(op_revision(3, 0) > s.data_revision());
    s.check_invariants().unwrap();
    // Batches hold a bounded number of commands (only data ones: the type says so).
    let too_many = vec![data(put("x")); crate::limits::OPS_PER_ENTRY as usize + 1];
    assert!(s
        .apply(4, &req(Command::Batch(too_many)))
        .rejected
        .is_some());
}

#[test]
fn autoclean_takes_learners_first_by_committed_down_time_and_keeps_quorum() {
    let mut s = boot();
    let at = |now_ms, cmd| Request { now_ms, cmd };
    for (i, id) in [2u64, 3, 4].into_iter().enumerate() {
        let idx = 2 + 2 * i as u64;
        assert!(add(&mut s, idx, id, &format!("n{id}")).is_ok());
        assert!(s
            .apply(idx + 1, &at(1000, Command::MarkUp { id, addr: None }))
            .is_ok());
    }
    let roles = Command::SetRoles {
        voters: vec![1, 2, 3],
        learners: vec![4],
    };
    assert!(s.apply(20, &req(roles)).is_ok());
    assert!(s.apply(21, &at(1000, Command::MarkDown { id: 2 })).is_ok());
    assert!(s.apply(22, &at(2000, Command::MarkDown { id: 4 })).is_ok());
    // Nothing is due before its delay, counted from the committed down-since time.
    assert_eq!(s.autoclean_candidate(1400, 500), None);
    assert_eq!(s.autoclean_candidate(1500, 500), Some(2));
    // The learner goes first once both are due.
    assert_eq!(s.autoclean_candidate(2500, 500), Some(4));
    // 0 turns it off; a delay set through the API wins over the leader's default.
    assert_eq!(s.autoclean_candidate(9999, 0), None);
    assert!(s
        .apply(23, &req(Command::SetAutoclean { ms: 5000 }))
        .is_ok());
    assert_eq!(s.autoclean_candidate(2500, 500), None);
    assert_eq!(s.autoclean_candidate(6000, 500), Some(2));
    assert!(s.apply(24, &req(Command::SetAutoclean { ms: 500 })).is_ok());
    // Never below quorum: with a second voter down, removing one would leave 1 up of 2.
    assert!(s.apply(25, &at(2000, Command::MarkDown { id: 3 })).is_ok());
    assert!(s
        .apply(
            26,
            &req(Command::RemoveMember {
                id: 4,
                reason: RemoveReason::Removed
            })
        )
        .is_ok());
    assert_eq!(s.autoclean_candidate(10_000, 500), None);
}
