use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::records::*;

fn endpoint(port: u16) -> EndpointSpec {
    EndpointSpec {
        name: "PLAINTEXT".into(),
        host: "127.0.0.1".into(),
        port,
        security_protocol: security_protocol::PLAINTEXT,
    }
}

struct Harness {
    logic: ControllerLogic,
    image: MetadataImage,
    now: Instant,
    epochs: std::collections::HashMap<i32, i64>,
}

impl Harness {
    fn new() -> Self {
        let cfg = ControllerConfig {
            session_timeout: Duration::from_secs(5),
            ..ControllerConfig::default()
        };
        Harness {
            logic: ControllerLogic::with_seed(cfg, 7),
            image: MetadataImage::default(),
            now: Instant::now(),
            epochs: Default::default(),
        }
    }

    /// Handle a request and "commit" it: replaying the emitted records on a copy of the
    /// committed image must give the working image, as it will on every replica.
    fn call(&mut self, req: ControllerRequest) -> ControllerResponse {
        let committed = self.image.clone();
        let (resp, records) = self.logic.handle(&mut self.image, &req, self.now);
        let mut replayed = committed;
        let bytes = encode_batch(&records);
        replayed.apply_batch(0, &decode_batch(&bytes).unwrap());
        assert_eq!(
            replayed, self.image,
            "replay diverges from the working image"
        );
        resp
    }

    fn register(&mut self, id: i32, rack: &str) {
        let resp = self.call(ControllerRequest::RegisterBroker(RegisterBroker {
            broker_id: id,
            incarnation_id: Uuid::from_u128(id as u128 + 100),
            endpoints: vec![endpoint(9000 + id as u16)],
            rack: Some(rack.into()),
        }));
        let ControllerResponse::RegisterBroker(Ok(r)) = resp else {
            panic!("{resp:?}")
        };
        self.epochs.insert(id, r.broker_epoch);
        let hb = self.heartbeat(id);
        assert!(!hb.is_fenced);
    }

    fn heartbeat(&mut self, id: i32) -> HeartbeatReply {
        self.heartbeat_with(id, false)
    }

    fn heartbeat_with(&mut self, id: i32, want_fence: bool) -> HeartbeatReply {
        let resp = self.call(ControllerRequest::Heartbeat(Heartbeat {
            broker_id: id,
            broker_epoch: self.epochs[&id],
            current_metadata_offset: u64::MAX,
            want_fence,
            want_shutdown: false,
        }));
        let ControllerResponse::Heartbeat(Ok(r)) = resp else {
            panic!("{resp:?}")
        };
        r
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16) -> Result<CreatedTopic, ApiError> {
        let resp = self.call(ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: rf,
                assignments: vec![],
                configs: vec![],
            }],
            validate_only: false,
        });
        let ControllerResponse::CreateTopics(mut v) = resp else {
            panic!()
        };
        v.remove(0).1
    }
}

#[test]
fn create_topics_validates_like_kafka() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "b");
    h.register(3, "c");
    let t = h.create("orders", 6, 3).unwrap();
    assert_eq!((t.num_partitions, t.replication_factor), (6, 3));
    let topic = h.image.topic("orders").unwrap();
    assert_eq!(topic.id, t.topic_id);
    for p in topic.partitions.values() {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
    }
    assert_eq!(h.create("orders", 1, 1).unwrap_err().code, 36);
    assert_eq!(h.create("bad/name", 1, 1).unwrap_err().code, 17);
    assert_eq!(h.create("", 1, 1).unwrap_err().code, 17);
    assert_eq!(h.create(&"x".repeat(250), 1, 1).unwrap_err().code, 17);
    assert_eq!(h.create("zero", 0, 1).unwrap_err().code, 37);
    // Hostile partition counts are refused before anything is allocated.
    assert_eq!(h.create("huge", i32::MAX, 1).unwrap_err().code, 44);
    assert_eq!(h.create("huge", 10_001, 1).unwrap_err().code, 44);
    assert_eq!(h.create("wide", 1, 4).unwrap_err().code, 38);
    h.create("a.b", 1, 1).unwrap();
    assert_eq!(h.create("a_b", 1, 1).unwrap_err().code, 17);
    // Defaults come from the controller config.
    let d = h.create("defaults", -1, -1).unwrap();
    assert_eq!((d.num_partitions, d.replication_factor), (1, 1));
}

#[test]
fn validate_only_and_bad_configs_change_nothing() {
    let mut h = Harness::new();
    h.register(1, "a");
    let before = h.image.clone();
    let resp = h.call(ControllerRequest::CreateTopics {
        topics: vec![CreatableTopic {
            name: "t".into(),
            num_partitions: 2,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![("retention.ms".into(), Some("1000".into()))],
        }],
        validate_only: true,
    });
    assert!(matches!(&resp, ControllerResponse::CreateTopics(v) if v[0].1.is_ok()));
    assert_eq!(h.image, before);
    let resp = h.call(ControllerRequest::CreateTopics {
        topics: vec![CreatableTopic {
            name: "t".into(),
            num_partitions: 2,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![("retention.ms".into(), Some("soon".into()))],
        }],
        validate_only: false,
    });
    assert!(
        matches!(&resp, ControllerResponse::CreateTopics(v) if v[0].1.as_ref().unwrap_err().code == 40)
    );
    assert_eq!(h.image, before);
}

#[test]
fn manual_assignments_are_checked() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "a");
    let mut create = |assignments: Vec<(i32, Vec<i32>)>| {
        let resp = h.call(ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: "m".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments,
                configs: vec![],
            }],
            validate_only: true,
        });
        let ControllerResponse::CreateTopics(v) = resp else {
            panic!()
        };
        v[0].1.clone().map_err(|e| e.code)
    };
    assert!(create(vec![(0, vec![2, 1]), (1, vec![1, 2])]).is_ok());
    assert_eq!(create(vec![(0, vec![1, 1])]), Err(39));
    assert_eq!(create(vec![(0, vec![1, 9])]), Err(39));
    assert_eq!(create(vec![(0, vec![1]), (1, vec![1, 2])]), Err(39));
    assert_eq!(create(vec![(1, vec![1])]), Err(39));
}

#[test]
fn delete_and_create_partitions() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "b");
    let t = h.create("t", 2, 2).unwrap();
    let resp = h.call(ControllerRequest::CreatePartitions {
        topics: vec![NewPartitions {
            topic: "t".into(),
            count: 1,
            assignments: vec![],
        }],
        validate_only: false,
    });
    assert!(
        matches!(&resp, ControllerResponse::CreatePartitions(v) if v[0].1.as_ref().unwrap_err().code == 37)
    );
    let resp = h.call(ControllerRequest::CreatePartitions {
        topics: vec![NewPartitions {
            topic: "t".into(),
            count: 5,
            assignments: vec![],
        }],
        validate_only: false,
    });
    assert!(matches!(&resp, ControllerResponse::CreatePartitions(v) if v[0].1.is_ok()));
    let topic = h.image.topic("t").unwrap();
    assert_eq!(topic.partitions.len(), 5);
    assert!(topic.partitions.values().all(|p| p.replicas.len() == 2));
    let resp = h.call(ControllerRequest::DeleteTopics(vec![
        TopicRef {
            name: None,
            id: Some(t.topic_id),
        },
        TopicRef {
            name: Some("nope".into()),
            id: None,
        },
    ]));
    let ControllerResponse::DeleteTopics(v) = resp else {
        panic!()
    };
    assert_eq!(v[0].1.as_ref().unwrap().name, "t");
    assert_eq!(v[1].1.as_ref().unwrap_err().code, 3);
    assert!(h.image.topic("t").is_none());
}

#[test]
fn incremental_and_legacy_alter_configs() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.create("t", 1, 1).unwrap();
    let alter = |h: &mut Harness, incremental, ops: Vec<(&str, AlterConfigOp, Option<&str>)>| {
        let resp = h.call(ControllerRequest::AlterConfigs {
            changes: vec![ConfigChange {
                resource: ConfigResource::Topic("t".into()),
                incremental,
                ops: ops
                    .into_iter()
                    .map(|(k, o, v)| (k.to_string(), o, v.map(str::to_string)))
                    .collect(),
            }],
            validate_only: false,
        });
        let ControllerResponse::AlterConfigs(v) = resp else {
            panic!()
        };
        v[0].1.clone().map_err(|e| e.code)
    };
    let overrides = |h: &Harness| {
        h.image
            .config_overrides(ConfigResourceType::Topic, "t")
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    use AlterConfigOp::*;
    alter(&mut h, true, vec![("retention.ms", Set, Some("1000"))]).unwrap();
    alter(
        &mut h,
        true,
        vec![("cleanup.policy", Append, Some("compact"))],
    )
    .unwrap();
    assert_eq!(
        overrides(&h),
        ["cleanup.policy=compact", "retention.ms=1000"]
    );
    alter(
        &mut h,
        true,
        vec![("cleanup.policy", Append, Some("delete"))],
    )
    .unwrap();
    alter(
        &mut h,
        true,
        vec![("cleanup.policy", Subtract, Some("compact"))],
    )
    .unwrap();
    assert_eq!(
        overrides(&h),
        ["cleanup.policy=delete", "retention.ms=1000"]
    );
    assert_eq!(
        alter(&mut h, true, vec![("retention.ms", Append, Some("1"))]),
        Err(40)
    );
    // A bad op anywhere leaves the resource untouched.
    assert_eq!(
        alter(
            &mut h,
            true,
            vec![
                ("retention.ms", Delete, None),
                ("segment.bytes", Set, Some("x"))
            ]
        ),
        Err(40)
    );
    assert_eq!(
        overrides(&h),
        ["cleanup.policy=delete", "retention.ms=1000"]
    );
    // Legacy AlterConfigs replaces the whole set.
    alter(&mut h, false, vec![("segment.ms", Set, Some("5000"))]).unwrap();
    assert_eq!(overrides(&h), ["segment.ms=5000"]);
    // Cluster-wide broker default.
    let resp = h.call(ControllerRequest::AlterConfigs {
        changes: vec![ConfigChange {
            resource: ConfigResource::Broker(String::new()),
            incremental: true,
            ops: vec![("log.retention.ms".into(), Set, Some("60000".into()))],
        }],
        validate_only: false,
    });
    assert!(matches!(&resp, ControllerResponse::AlterConfigs(v) if v[0].1.is_ok()));
}

#[test]
fn silent_brokers_are_fenced_and_lose_leadership() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "b");
    h.register(3, "c");
    h.create("t", 6, 3).unwrap();
    let led_by_1: Vec<i32> = h
        .image
        .topic("t")
        .unwrap()
        .partitions
        .iter()
        .filter(|(_, p)| p.leader == 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(!led_by_1.is_empty());
    // Brokers 2 and 3 keep heartbeating; 1 goes silent.
    h.now += Duration::from_secs(3);
    h.heartbeat(2);
    h.heartbeat(3);
    h.now += Duration::from_secs(3);
    let records = h.logic.tick(&mut h.image, h.now);
    assert!(!records.is_empty());
    assert!(h.image.broker(1).unwrap().fenced);
    for (id, p) in &h.image.topic("t").unwrap().partitions {
        assert_ne!(p.leader, 1);
        assert!(!p.isr.contains(&1));
        assert!(p.isr.contains(&p.leader));
        if led_by_1.contains(id) {
            assert_eq!(p.leader_epoch, 1, "leader change bumps the epoch");
        }
    }
    // A stale epoch is refused; a new incarnation registers and is unfenced after catching up.
    let resp = h.call(ControllerRequest::Heartbeat(Heartbeat {
        broker_id: 1,
        broker_epoch: h.epochs[&1] + 100,
        current_metadata_offset: 0,
        want_fence: false,
        want_shutdown: false,
    }));
    assert!(matches!(resp, ControllerResponse::Heartbeat(Err(ref e)) if e.code == 77));
    let resp = h.call(ControllerRequest::RegisterBroker(RegisterBroker {
        broker_id: 1,
        incarnation_id: Uuid::from_u128(999),
        endpoints: vec![endpoint(9001)],
        rack: Some("a".into()),
    }));
    let ControllerResponse::RegisterBroker(Ok(r)) = resp else {
        panic!("{resp:?}")
    };
    assert!(r.broker_epoch > h.epochs[&1]);
    h.epochs.insert(1, r.broker_epoch);
    h.logic.registration_committed(1, 50);
    let resp = h.call(ControllerRequest::Heartbeat(Heartbeat {
        broker_id: 1,
        broker_epoch: r.broker_epoch,
        current_metadata_offset: 10,
        want_fence: false,
        want_shutdown: false,
    }));
    assert!(
        matches!(resp, ControllerResponse::Heartbeat(Ok(ref r)) if r.is_fenced && !r.is_caught_up)
    );
    let resp = h.call(ControllerRequest::Heartbeat(Heartbeat {
        broker_id: 1,
        broker_epoch: r.broker_epoch,
        current_metadata_offset: 50,
        want_fence: false,
        want_shutdown: false,
    }));
    assert!(matches!(resp, ControllerResponse::Heartbeat(Ok(ref r)) if !r.is_fenced));
}

#[test]
fn last_isr_member_keeps_its_place_and_leads_again_when_back() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.create("solo", 1, 1).unwrap();
    h.now += Duration::from_secs(6);
    h.logic.tick(&mut h.image, h.now);
    let p = h.image.partition("solo", 0).unwrap().clone();
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
    let r = h.heartbeat(1);
    assert!(!r.is_fenced);
    let p = h.image.partition("solo", 0).unwrap();
    assert_eq!(p.leader, 1);
    assert_eq!(p.leader_epoch, 2);
}

#[test]
fn alter_partition_checks_epochs() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "b");
    h.create("t", 1, 2).unwrap();
    let id = h.image.topic("t").unwrap().id;
    let p = h.image.partition("t", 0).unwrap().clone();
    let leader = p.leader;
    let follower = p.replicas.iter().copied().find(|b| *b != leader).unwrap();
    let alter = |h: &mut Harness, broker: i32, leader_epoch, partition_epoch, isr: Vec<i32>| {
        let resp = h.call(ControllerRequest::AlterPartition(AlterPartition {
            broker_id: broker,
            broker_epoch: h.epochs[&broker],
            topic_id: id,
            partition: 0,
            leader_epoch,
            partition_epoch,
            new_isr: isr,
        }));
        let ControllerResponse::AlterPartition(r) = resp else {
            panic!()
        };
        r.map_err(|e| e.code)
    };
    assert_eq!(alter(&mut h, follower, 0, 0, vec![follower]), Err(42));
    // A partition epoch from the future: this controller is behind.
    assert_eq!(alter(&mut h, leader, 0, 5, vec![leader]), Err(41));
    assert_eq!(alter(&mut h, leader, 0, 0, vec![leader, 7]), Err(42));
    assert_eq!(alter(&mut h, leader, 0, 0, vec![leader, leader]), Err(42));
    assert_eq!(alter(&mut h, leader, 0, 0, vec![follower]), Err(42));
    let s = alter(&mut h, leader, 0, 0, vec![leader]).unwrap();
    assert_eq!(
        (s.isr, s.partition_epoch, s.leader_epoch),
        (vec![leader], 1, 0)
    );
    // The old partition epoch is now stale.
    assert_eq!(alter(&mut h, leader, 0, 0, vec![leader, follower]), Err(95));
    // A fenced replica cannot join the ISR.
    h.call(ControllerRequest::Heartbeat(Heartbeat {
        broker_id: follower,
        broker_epoch: h.epochs[&follower],
        current_metadata_offset: u64::MAX,
        want_fence: true,
        want_shutdown: false,
    }));
    assert_eq!(
        alter(&mut h, leader, 0, 1, vec![leader, follower]),
        Err(107)
    );
    h.heartbeat(follower);
    let s = alter(&mut h, leader, 0, 1, vec![leader, follower]).unwrap();
    assert_eq!(s.isr.len(), 2);
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.register(2, "b");
    let mut blocks = vec![];
    for b in [1, 2, 1] {
        let resp = h.call(ControllerRequest::AllocateProducerIds {
            broker_id: b,
            broker_epoch: h.epochs[&b],
        });
        let ControllerResponse::AllocateProducerIds(Ok(r)) = resp else {
            panic!()
        };
        blocks.push(r.first);
    }
    assert_eq!(blocks, vec![0, 1000, 2000]);
    let resp = h.call(ControllerRequest::AllocateProducerIds {
        broker_id: 1,
        broker_epoch: -5,
    });
    assert!(matches!(resp, ControllerResponse::AllocateProducerIds(Err(ref e)) if e.code == 77));
}

#[test]
fn restarted_node_re_registers_at_once_after_a_controller_change() {
    let mut h = Harness::new();
    h.register(1, "a");
    h.create("t", 1, 1).unwrap();
    // The whole node restarts: a new controller term, then a new broker incarnation.
    let committed = h.image.clone();
    h.logic.become_leader(&committed, h.now);
    let resp = h.call(ControllerRequest::RegisterBroker(RegisterBroker {
        broker_id: 1,
        incarnation_id: Uuid::from_u128(4242),
        endpoints: vec![endpoint(9001)],
        rack: Some("a".into()),
    }));
    let ControllerResponse::RegisterBroker(Ok(r)) = resp else {
        panic!("{resp:?}")
    };
    h.epochs.insert(1, r.broker_epoch);
    assert!(!h.heartbeat(1).is_fenced);
    assert_eq!(h.image.partition("t", 0).unwrap().leader, 1);
    // But a live incarnation this controller hears from still blocks a second one.
    let resp = h.call(ControllerRequest::RegisterBroker(RegisterBroker {
        broker_id: 1,
        incarnation_id: Uuid::from_u128(4243),
        endpoints: vec![endpoint(9001)],
        rack: Some("a".into()),
    }));
    assert!(matches!(resp, ControllerResponse::RegisterBroker(Err(ref e)) if e.code == 101));
}

/// The partition's leader sets its ISR (AlterPartition with the current epochs); asserts the
/// controller took it.
fn set_isr_as_leader(h: &mut Harness, topic: &str, partition: i32, isr: Vec<i32>) {
    let p = h.image.partition(topic, partition).unwrap().clone();
    let resp = h.call(ControllerRequest::AlterPartition(AlterPartition {
        broker_id: p.leader,
        broker_epoch: h.epochs[&p.leader],
        topic_id: h.image.topic(topic).unwrap().id,
        partition,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: isr,
    }));
    assert!(
        matches!(resp, ControllerResponse::AlterPartition(Ok(_))),
        "{resp:?}"
    );
}

fn elect(
    h: &mut Harness,
    election_type: i8,
    partitions: Option<Vec<(String, i32)>>,
) -> Vec<(String, i32, Result<(), i16>)> {
    let resp = h.call(ControllerRequest::ElectLeaders {
        election_type,
        partitions,
    });
    let ControllerResponse::ElectLeaders(r) = resp else {
        panic!("{resp:?}")
    };
    r.into_iter()
        .map(|(t, p, r)| (t, p, r.map_err(|e| e.code)))
        .collect()
}

fn fence(h: &mut Harness, id: i32) {
    h.call(ControllerRequest::Heartbeat(Heartbeat {
        broker_id: id,
        broker_epoch: h.epochs[&id],
        current_metadata_offset: u64::MAX,
        want_fence: true,
        want_shutdown: false,
    }));
}

#[test]
fn preferred_elections_give_leadership_back_to_the_first_replica() {
    let mut h = Harness::new();
    for id in 1..=3 {
        h.register(id, "r");
    }
    h.create("p", 1, 3).unwrap();
    let part = h.image.partition("p", 0).unwrap().clone();
    let preferred = part.replicas[0];
    let one = Some(vec![("p".to_string(), 0)]);
    assert_eq!(
        elect(&mut h, 0, one.clone())[0].2,
        Err(84),
        "already the leader"
    );
    // The preferred replica is fenced: someone else leads, and it cannot take over yet.
    fence(&mut h, preferred);
    assert_ne!(h.image.partition("p", 0).unwrap().leader, preferred);
    assert_eq!(elect(&mut h, 0, one.clone())[0].2, Err(80));
    // Back and in the ISR again: a preferred election moves leadership and bumps the epoch.
    h.heartbeat(preferred);
    let p = h.image.partition("p", 0).unwrap().clone();
    set_isr_as_leader(&mut h, "p", 0, p.replicas.clone());
    assert_eq!(elect(&mut h, 0, one)[0].2, Ok(()));
    let after = h.image.partition("p", 0).unwrap();
    assert_eq!(after.leader, preferred);
    assert_eq!(after.leader_epoch, p.leader_epoch + 1);
    assert_eq!(
        elect(&mut h, 0, Some(vec![("nope".to_string(), 0)]))[0].2,
        Err(3)
    );
    // With no list, partitions that need nothing are not reported.
    assert!(elect(&mut h, 0, None).is_empty());
}

#[test]
fn unclean_elections_only_when_the_topic_allows_or_an_admin_asks() {
    let mut h = Harness::new();
    for id in 1..=2 {
        h.register(id, "r");
    }
    h.create("u", 1, 2).unwrap();
    let p = h.image.partition("u", 0).unwrap().clone();
    let (leader, other) = (
        p.leader,
        *p.replicas.iter().find(|r| **r != p.leader).unwrap(),
    );
    // The ISR shrinks to the leader, which then dies: no clean candidate is left.
    set_isr_as_leader(&mut h, "u", 0, vec![leader]);
    fence(&mut h, leader);
    let p = h.image.partition("u", 0).unwrap().clone();
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![leader]));
    // An admin's unclean election picks the live out-of-ISR replica.
    let one = Some(vec![("u".to_string(), 0)]);
    assert_eq!(elect(&mut h, 1, one.clone())[0].2, Ok(()));
    let p = h.image.partition("u", 0).unwrap().clone();
    assert_eq!((p.leader, p.isr.clone()), (other, vec![other]));
    assert_eq!(elect(&mut h, 1, one)[0].2, Err(84));

    // A topic that allows it elects unclean by itself when its last ISR member is fenced.
    h.heartbeat(leader);
    h.create("auto", 1, 2).unwrap();
    h.call(ControllerRequest::AlterConfigs {
        changes: vec![ConfigChange {
            resource: ConfigResource::Topic("auto".into()),
            incremental: true,
            ops: vec![(
                "unclean.leader.election.enable".into(),
                AlterConfigOp::Set,
                Some("true".into()),
            )],
        }],
        validate_only: false,
    });
    let p = h.image.partition("auto", 0).unwrap().clone();
    let survivor = *p.replicas.iter().find(|r| **r != p.leader).unwrap();
    set_isr_as_leader(&mut h, "auto", 0, vec![p.leader]);
    h.heartbeat(survivor);
    fence(&mut h, p.leader);
    let after = h.image.partition("auto", 0).unwrap();
    assert_eq!(
        (after.leader, after.isr.clone()),
        (survivor, vec![survivor])
    );
}

#[test]
fn the_periodic_check_restores_preferred_leaders() {
    let mut h = Harness::new();
    h.logic.cfg.leader_imbalance_check_interval = Duration::from_secs(10);
    for id in 1..=3 {
        h.register(id, "r");
    }
    h.create("b", 6, 3).unwrap();
    let prefers_1: Vec<i32> = h
        .image
        .topic("b")
        .unwrap()
        .partitions
        .iter()
        .filter(|(_, p)| p.replicas[0] == 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(!prefers_1.is_empty());
    // Broker 1 restarts: fenced (leaderships move), then back in every ISR.
    fence(&mut h, 1);
    h.heartbeat(1);
    for i in 0..6 {
        let p = h.image.partition("b", i).unwrap().clone();
        if !p.isr.contains(&1) {
            set_isr_as_leader(&mut h, "b", i, p.replicas.clone());
        }
    }
    for i in &prefers_1 {
        assert_ne!(h.image.partition("b", *i).unwrap().leader, 1);
    }
    // The first tick starts the clock; one interval later leadership goes back.
    for id in 1..=3 {
        h.heartbeat(id);
    }
    h.logic.tick(&mut h.image, h.now);
    h.now += Duration::from_secs(4);
    for id in 1..=3 {
        h.heartbeat(id);
    }
    h.logic.tick(&mut h.image, h.now);
    assert_ne!(h.image.partition("b", prefers_1[0]).unwrap().leader, 1);
    h.now += Duration::from_secs(4);
    for id in 1..=3 {
        h.heartbeat(id);
    }
    h.now += Duration::from_secs(3);
    h.logic.tick(&mut h.image, h.now);
    for i in &prefers_1 {
        assert_eq!(
            h.image.partition("b", *i).unwrap().leader,
            1,
            "partition {i}"
        );
    }
}

#[test]
fn a_new_controller_fences_brokers_silent_since_the_takeover_after_half_a_session() {
    let mut h = Harness::new();
    for id in 1..=3 {
        h.register(id, "r");
    }
    h.create("t", 3, 3).unwrap();
    // Another node takes over (session timeout 5 s in the harness).
    let image = h.image.clone();
    h.logic.become_leader(&image, h.now);
    h.now += Duration::from_millis(2000);
    h.heartbeat(2);
    h.heartbeat(3);
    assert!(
        h.logic.tick(&mut h.image, h.now).is_empty(),
        "2 s is not enough"
    );
    h.now += Duration::from_millis(600);
    h.logic.tick(&mut h.image, h.now);
    assert!(
        h.image.broker(1).unwrap().fenced,
        "silent since the takeover"
    );
    assert!(!h.image.broker(2).unwrap().fenced);
    assert!(!h.image.broker(3).unwrap().fenced);
}

fn reassign(
    h: &mut Harness,
    allow_rf_change: bool,
    partitions: Vec<(&str, i32, Option<Vec<i32>>)>,
) -> Vec<Result<(), i16>> {
    let resp = h.call(ControllerRequest::AlterPartitionReassignments {
        partitions: partitions
            .into_iter()
            .map(|(t, p, r)| (t.to_string(), p, r))
            .collect(),
        allow_replication_factor_change: allow_rf_change,
    });
    let ControllerResponse::AlterPartitionReassignments(r) = resp else {
        panic!("{resp:?}")
    };
    r.into_iter()
        .map(|(_, _, r)| r.map_err(|e| e.code))
        .collect()
}

fn create_on(h: &mut Harness, name: &str, replicas: Vec<i32>) {
    let resp = h.call(ControllerRequest::CreateTopics {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, replicas)],
            configs: vec![],
        }],
        validate_only: false,
    });
    assert!(
        matches!(&resp, ControllerResponse::CreateTopics(v) if v[0].1.is_ok()),
        "{resp:?}"
    );
}

#[test]
fn a_reassignment_adds_catches_up_then_switches_and_removes() {
    let mut h = Harness::new();
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
        h.register(id, rack);
    }
    create_on(&mut h, "moving", vec![1, 2, 3]);
    assert_eq!(
        reassign(&mut h, true, vec![("moving", 0, Some(vec![4, 2, 3]))]),
        vec![Ok(())]
    );
    let p = h.image.partition("moving", 0).unwrap().clone();
    // Target first, then the replicas leaving; the leader stays until the switch.
    assert_eq!(p.replicas, vec![4, 2, 3, 1]);
    assert_eq!(
        (p.adding_replicas.clone(), p.removing_replicas.clone()),
        (vec![4], vec![1])
    );
    assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2, 3]));
    // An ISR change without the new replica leaves the reassignment pending.
    set_isr_as_leader(&mut h, "moving", 0, vec![1, 2]);
    assert!(h.image.partition("moving", 0).unwrap().reassigning());
    set_isr_as_leader(&mut h, "moving", 0, vec![1, 2, 3]);
    // The new replica caught up: the same change completes the move, and the leader, which
    // is being removed, hands over to the first target replica in sync.
    let before = h.image.partition("moving", 0).unwrap().leader_epoch;
    set_isr_as_leader(&mut h, "moving", 0, vec![1, 2, 3, 4]);
    let p = h.image.partition("moving", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![4, 2, 3]);
    assert_eq!(p.isr, vec![2, 3, 4]);
    assert_eq!(p.leader, 4);
    assert_eq!(p.leader_epoch, before + 1);
    assert!(!p.reassigning());
    // Nothing left to cancel.
    assert_eq!(
        reassign(&mut h, true, vec![("moving", 0, None)]),
        vec![Err(85)]
    );
}

#[test]
fn reassignments_validate_cancel_and_restart_from_the_original_replicas() {
    let mut h = Harness::new();
    for (id, rack) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")] {
        h.register(id, rack);
    }
    create_on(&mut h, "t", vec![1, 2, 3]);
    let bad = reassign(
        &mut h,
        false,
        vec![
            ("t", 0, Some(vec![])),
            ("t", 0, Some(vec![1, 1, 2])),
            ("t", 0, Some(vec![1, 2, 9])),
            ("t", 0, Some(vec![1, 2])),
            ("t", 7, Some(vec![1, 2, 3])),
            ("nope", 0, Some(vec![1, 2, 3])),
        ],
    );
    assert_eq!(
        bad,
        vec![Err(39), Err(39), Err(39), Err(38), Err(3), Err(3)]
    );
    assert!(!h.image.partition("t", 0).unwrap().reassigning());

    // Shrinking the replication factor needs no catching up: done at once (the ISR holds
    // the whole target).
    assert_eq!(
        reassign(&mut h, true, vec![("t", 0, Some(vec![2, 3]))]),
        vec![Ok(())]
    );
    let p = h.image.partition("t", 0).unwrap().clone();
    assert_eq!((p.replicas, p.isr, p.leader), (vec![2, 3], vec![2, 3], 2));

    // A move in progress, then a new target: as in Kafka's controller it is merged with the
    // current replica list, so the first move's new replica becomes one being removed.
    assert_eq!(
        reassign(&mut h, true, vec![("t", 0, Some(vec![2, 4]))]),
        vec![Ok(())]
    );
    assert_eq!(h.image.partition("t", 0).unwrap().replicas, vec![2, 4, 3]);
    assert_eq!(
        reassign(&mut h, true, vec![("t", 0, Some(vec![5, 3]))]),
        vec![Ok(())]
    );
    let p = h.image.partition("t", 0).unwrap().clone();
    assert_eq!(p.replicas, vec![5, 3, 2, 4]);
    assert_eq!(
        (p.adding_replicas.clone(), p.removing_replicas.clone()),
        (vec![5], vec![2, 4])
    );
    assert_eq!(
        p.isr,
        vec![2, 3],
        "nothing in sync leaves the ISR before completion"
    );

    // Cancelling drops the adding replicas (Kafka's revert: the order is the merged list's,
    // so the preferred leader may change).
    assert_eq!(reassign(&mut h, true, vec![("t", 0, None)]), vec![Ok(())]);
    let p = h.image.partition("t", 0).unwrap().clone();
    assert_eq!(
        (p.replicas.clone(), p.isr.clone(), p.leader),
        (vec![3, 2, 4], vec![2, 3], 2)
    );
    assert!(!p.reassigning());

    // A cancelled move whose new replica had become leader: leadership returns to an
    // original replica instead of staying with a broker that is no longer a replica.
    create_on(&mut h, "u", vec![1, 2]);
    assert_eq!(
        reassign(&mut h, true, vec![("u", 0, Some(vec![3, 4]))]),
        vec![Ok(())]
    );
    set_isr_as_leader(&mut h, "u", 0, vec![1, 2, 3]);
    assert_eq!(
        elect(&mut h, elections::PREFERRED, Some(vec![("u".into(), 0)])),
        vec![("u".into(), 0, Ok(()))]
    );
    assert_eq!(h.image.partition("u", 0).unwrap().leader, 3);
    assert_eq!(reassign(&mut h, true, vec![("u", 0, None)]), vec![Ok(())]);
    let p = h.image.partition("u", 0).unwrap().clone();
    assert_eq!((p.replicas, p.isr, p.leader), (vec![1, 2], vec![1, 2], 1));

    // A move that completes while no target replica can lead leaves the partition
    // leaderless (not stuck half-moved); unfencing the replica makes it leader again.
    create_on(&mut h, "w", vec![1, 2, 3]);
    set_isr_as_leader(&mut h, "w", 0, vec![1]);
    h.heartbeat_with(1, true);
    assert_eq!(h.image.partition("w", 0).unwrap().leader, NO_LEADER);
    assert_eq!(
        reassign(&mut h, true, vec![("w", 0, Some(vec![1]))]),
        vec![Ok(())]
    );
    let p = h.image.partition("w", 0).unwrap().clone();
    assert_eq!((p.replicas.clone(), p.leader), (vec![1], NO_LEADER));
    assert!(!p.reassigning());
    h.heartbeat_with(1, false);
    assert_eq!(h.image.partition("w", 0).unwrap().leader, 1);

    // The snapshot carries a reassignment in progress.
    assert_eq!(
        reassign(&mut h, true, vec![("t", 0, Some(vec![2, 4]))]),
        vec![Ok(())]
    );
    let mut rebuilt = MetadataImage::default();
    rebuilt.apply_batch(0, &h.image.to_records());
    assert_eq!(
        rebuilt.partition("t", 0),
        h.image.partition("t", 0),
        "snapshot round trip"
    );
}
