//! A rebalance asked for by an operator (the control API's `POST /v1/groups/{group}/rebalance`)
//! rather than by a member. Kafka has no such request; the effect is the one a membership
//! change has:
//!
//! - a classic group goes to PreparingRebalance, so every member's next Heartbeat answers
//!   REBALANCE_IN_PROGRESS and the members rejoin (a group already preparing is left alone);
//! - a KIP-848 consumer group gets a new group epoch, so the next member heartbeat computes a
//!   new target assignment and every member reconciles to the new epoch.

use crate::group::classic::GroupState;
use crate::group::codes;
use crate::group::consumer::records::ConsumerRecord;
use crate::group::records::CoordinatorRecord;
use crate::group::state::ShardState;

/// What [`ShardState::force_rebalance`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forced {
    /// A classic group moved to PreparingRebalance (from the named state).
    Classic { from: &'static str, members: usize },
    /// A classic group was already rebalancing.
    AlreadyRebalancing { members: usize },
    /// A consumer group's epoch was bumped to `epoch`; `end` is the log offset after the
    /// record, which must be committed before the change is reported.
    Consumer {
        epoch: i32,
        members: usize,
        end: i64,
    },
}

/// Why a forced rebalance was refused (besides Kafka error codes such as NOT_COORDINATOR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Kafka's code: GROUP_ID_NOT_FOUND, or an error writing the record.
    Code(i16),
    /// The group exists but has no members to rebalance.
    NoMembers,
}

impl ShardState {
    /// Forces a rebalance of `group_id` (see the module docs).
    pub fn force_rebalance(&mut self, group_id: &str) -> Result<Forced, Refused> {
        if let Some(g) = self.consumer_groups.get(group_id) {
            let members = g.num_members();
            if members == 0 {
                return Err(Refused::NoMembers);
            }
            let epoch = g.group_epoch + 1;
            let record = CoordinatorRecord::Consumer(ConsumerRecord::GroupEpoch {
                group: group_id.to_string(),
                epoch: Some(epoch),
            });
            let end = self.write_and_replay(&[record]).map_err(Refused::Code)?;
            tracing::info!(group = %group_id, epoch, "consumer group rebalance forced by an operator");
            return Ok(Forced::Consumer {
                epoch,
                members,
                end,
            });
        }
        let ShardState { groups, env, .. } = self;
        let g = groups
            .get_mut(group_id)
            .filter(|g| !g.is(GroupState::Dead))
            .ok_or(Refused::Code(codes::GROUP_ID_NOT_FOUND))?;
        let members = g.num_members();
        match g.state() {
            GroupState::PreparingRebalance => Ok(Forced::AlreadyRebalancing { members }),
            GroupState::Empty | GroupState::Dead => Err(Refused::NoMembers),
            state @ (GroupState::CompletingRebalance | GroupState::Stable) => {
                env.prepare_rebalance(g, "forced by an operator");
                Ok(Forced::Classic {
                    from: state.name(),
                    members,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;
    use crate::group::GroupCoordinatorConfig;
    use crate::group::consumer::group::ConsumerGroup;
    use crate::group::consumer::member::ConsumerMember;
    use crate::group::member::Protocol;
    use crate::group::rebalance::{JoinRequest, SyncRequest};
    use crate::group::state::testing;

    fn config() -> GroupCoordinatorConfig {
        GroupCoordinatorConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupCoordinatorConfig::default()
        }
    }

    fn join_req(member: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Bytes::from_static(b"sub"),
            }],
            api_version: 5,
            reason: None,
        }
    }

    /// One member through the first rebalance to Stable; its id and generation.
    fn stable_member(st: &mut ShardState) -> (String, i32) {
        let (tx, mut rx) = oneshot::channel();
        st.join(join_req(""), tx);
        let id = rx.try_recv().unwrap().member_id;
        let (tx, mut rx) = oneshot::channel();
        st.join(join_req(&id), tx);
        st.fire_timers();
        let generation = rx.try_recv().unwrap().generation_id;
        let (tx, mut rx) = oneshot::channel();
        st.sync(
            SyncRequest {
                group_id: "g".into(),
                member_id: id.clone(),
                group_instance_id: None,
                generation_id: generation,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments: vec![(id.clone(), Bytes::from_static(b"a"))],
            },
            tx,
        );
        st.settle();
        assert_eq!(rx.try_recv().unwrap().error, codes::NONE);
        assert!(st.groups["g"].is(GroupState::Stable));
        (id, generation)
    }

    #[test]
    fn a_stable_classic_group_prepares_and_members_hear_it_on_heartbeat() {
        let (mut st, _log) = testing::shard(config());
        let (id, generation) = stable_member(&mut st);
        assert_eq!(st.heartbeat("g", &id, None, generation), codes::NONE);
        assert_eq!(
            st.force_rebalance("g"),
            Ok(Forced::Classic {
                from: "Stable",
                members: 1
            })
        );
        assert!(st.groups["g"].is(GroupState::PreparingRebalance));
        assert_eq!(
            st.heartbeat("g", &id, None, generation),
            codes::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            st.force_rebalance("g"),
            Ok(Forced::AlreadyRebalancing { members: 1 })
        );
        // The member rejoins and the group moves to the next generation.
        let (tx, mut rx) = oneshot::channel();
        st.join(join_req(&id), tx);
        let r = rx
            .try_recv()
            .expect("the only member rejoined: the join phase ends");
        assert_eq!(r.error, codes::NONE);
        assert_eq!(r.generation_id, generation + 1);
    }

    #[test]
    fn a_consumer_group_gets_a_new_epoch() {
        let (mut st, log) = testing::shard(config());
        let mut g = ConsumerGroup::new("c");
        g.group_epoch = 4;
        g.put_member(ConsumerMember::new("m1"));
        st.consumer_groups.insert("c".into(), g);
        let Ok(Forced::Consumer {
            epoch: 5,
            members: 1,
            end,
        }) = st.force_rebalance("c")
        else {
            panic!("not forced");
        };
        assert_eq!(st.consumer_groups["c"].group_epoch, 5);
        assert_eq!(end, 1);
        assert!(matches!(
            &log.records.lock()[0].1,
            CoordinatorRecord::Consumer(ConsumerRecord::GroupEpoch { epoch: Some(5), .. })
        ));
    }

    #[test]
    fn unknown_and_empty_groups_are_refused() {
        let (mut st, _log) = testing::shard(config());
        assert_eq!(
            st.force_rebalance("nobody"),
            Err(Refused::Code(codes::GROUP_ID_NOT_FOUND))
        );
        st.groups.insert(
            "simple".into(),
            crate::group::classic::ClassicGroup::new("simple", 0),
        );
        assert_eq!(st.force_rebalance("simple"), Err(Refused::NoMembers));
        st.consumer_groups
            .insert("empty".into(), ConsumerGroup::new("empty"));
        assert_eq!(st.force_rebalance("empty"), Err(Refused::NoMembers));
    }
}
