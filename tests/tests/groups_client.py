"""Consumer-group members and group administration with real Kafka clients, for groups.rs.

Usage: groups_client.py CLIENT OP JSON_ARGS
  CLIENT: "rdkafka" (confluent-kafka, i.e. librdkafka) or "kafka-python"
  OP:     member | admin
Prints one JSON document on stdout; exits non-zero (with the error on stderr) on failure.

A member subscribes to a topic in a group ("protocol": "consumer" selects KIP-848 with
librdkafka, "assignor" its server-side assignor) and consumes until the file named by "stop" exists
(or "deadline" seconds pass, or "count" records arrived), committing after every record
(synchronously, so what was consumed is what is committed). It appends one JSON line per event
to the "progress" file: {"event": "assign"|"revoke", "partitions": [...]} from the rebalance
callbacks (incremental ones for cooperative assignors), {"event": "owned", "partitions": [...]}
whenever the set of partitions it owns changes, and {"event": "record", "partition": p,
"offset": o} after each committed record.
"""

import json
import os
import sys
import time


def dec(b):
    return None if b is None else b.decode("utf-8", "replace")


class Progress:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else None

    def log(self, **event):
        if self.f:
            self.f.write(json.dumps(event) + "\n")
            self.f.flush()


def done(a, start, n):
    if a.get("count") is not None and n >= a["count"]:
        return True
    if a.get("stop") and os.path.exists(a["stop"]):
        return True
    return time.time() - start > a.get("deadline", 60)


# ---------------------------------------------------------------- librdkafka (confluent-kafka)

def rd_member(a):
    from confluent_kafka import Consumer, KafkaError, KafkaException

    progress = Progress(a.get("progress"))
    conf = {
        "bootstrap.servers": a["bootstrap"],
        "group.id": a["group"],
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 1000,
        "client.id": a.get("client_id", "fjord-group-test"),
    }
    if a.get("protocol") == "consumer":
        # KIP-848: the coordinator assigns and sets the session and heartbeat interval.
        conf["group.protocol"] = "consumer"
        if a.get("assignor"):
            conf["group.remote.assignor"] = a["assignor"]
    else:
        conf["session.timeout.ms"] = a.get("session_ms", 6000)
        conf["heartbeat.interval.ms"] = a.get("heartbeat_ms", 500)
        conf["partition.assignment.strategy"] = a.get("strategy", "range")
    if a.get("instance"):
        conf["group.instance.id"] = a["instance"]
    c = Consumer(conf)

    def on_assign(consumer, partitions):
        progress.log(event="assign", partitions=sorted(p.partition for p in partitions))

    def on_revoke(consumer, partitions):
        progress.log(event="revoke", partitions=sorted(p.partition for p in partitions))

    c.subscribe([a["topic"]], on_assign=on_assign, on_revoke=on_revoke)
    out, errors = [], []
    owned = None
    start = time.time()
    while not done(a, start, len(out)):
        m = c.poll(0.2)
        now_owned = sorted(p.partition for p in c.assignment())
        if now_owned != owned:
            owned = now_owned
            progress.log(event="owned", partitions=owned)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                errors.append(str(m.error()))
            continue
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException as e:
            # The record stays uncommitted; another member may consume it again.
            errors.append("commit: " + str(e))
        out.append({"partition": m.partition(), "offset": m.offset(), "key": dec(m.key())})
        progress.log(event="record", partition=m.partition(), offset=m.offset())
    if a.get("kill_self"):
        # Leave without LeaveGroup: the coordinator must notice the session ending.
        os._exit(0)
    c.close()
    return {"records": out, "errors": errors}


def rd_admin(a):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": a["bootstrap"]})
    op = a["op"]
    if op == "list":
        r = admin.list_consumer_groups(request_timeout=15).result(20)
        return {"groups": sorted([{"group_id": g.group_id, "state": str(g.state).split(".")[-1],
                                   "type": str(getattr(g, "type", "")).split(".")[-1],
                                   "simple": g.is_simple_consumer_group} for g in r.valid],
                                 key=lambda g: g["group_id"]),
                "errors": [str(e) for e in r.errors]}
    if op == "describe":
        out = {}
        for gid, f in admin.describe_consumer_groups(a["groups"], request_timeout=15).items():
            try:
                d = f.result(20)
                out[gid] = {"state": str(d.state).split(".")[-1],
                            "type": str(getattr(d, "type", "")).split(".")[-1],
                            "protocol": d.partition_assignor,
                            "coordinator": d.coordinator.id,
                            "members": sorted([{"client_id": m.client_id, "host": m.host,
                                                "instance": m.group_instance_id,
                                                "partitions": sorted(p.partition for p in
                                                                     m.assignment.topic_partitions)}
                                               for m in d.members],
                                              key=lambda m: m["partitions"])}
            except Exception as e:  # noqa: BLE001 - the test asserts on the message
                out[gid] = {"error": str(e)}
        return out
    if op == "delete":
        out = {}
        for gid, f in admin.delete_consumer_groups(a["groups"], request_timeout=15).items():
            try:
                f.result(20)
                out[gid] = None
            except Exception as e:  # noqa: BLE001
                out[gid] = str(e)
        return out
    if op == "offsets":
        req = ConsumerGroupTopicPartitions(a["group"])
        (gid, f), = admin.list_consumer_group_offsets([req], request_timeout=15).items()
        r = f.result(20)
        return {str(p.partition): p.offset for p in r.topic_partitions if p.topic == a["topic"]}
    if op == "reset":
        req = ConsumerGroupTopicPartitions(a["group"], [TopicPartition(a["topic"], int(p), o)
                                                         for p, o in a["offsets"].items()])
        (gid, f), = admin.alter_consumer_group_offsets([req], request_timeout=15).items()
        r = f.result(20)
        return {str(p.partition): (str(p.error) if p.error else None) for p in r.topic_partitions}
    raise SystemExit(f"unknown admin op {op}")


# ---------------------------------------------------------------- kafka-python

def kp_member(a):
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError

    progress = Progress(a.get("progress"))

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            progress.log(event="assign", partitions=sorted(p.partition for p in assigned))

        def on_partitions_revoked(self, revoked):
            progress.log(event="revoke", partitions=sorted(p.partition for p in revoked))

    kw = {}
    if a.get("instance"):
        kw["group_instance_id"] = a["instance"]
    c = KafkaConsumer(bootstrap_servers=a["bootstrap"], group_id=a["group"],
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=a.get("session_ms", 6000),
                      heartbeat_interval_ms=a.get("heartbeat_ms", 500),
                      fetch_max_wait_ms=100, metadata_max_age_ms=1000,
                      client_id=a.get("client_id", "fjord-group-test"), **kw)
    c.subscribe([a["topic"]], listener=Listener())
    out, errors = [], []
    logged = 0
    owned = None
    start = time.time()
    while not done(a, start, len(out)):
        for _, msgs in c.poll(timeout_ms=200, max_records=50).items():
            for m in msgs:
                out.append({"partition": m.partition, "offset": m.offset, "key": dec(m.key)})
        now_owned = sorted(p.partition for p in c.assignment())
        if now_owned != owned:
            owned = now_owned
            progress.log(event="owned", partitions=owned)
        if len(out) > logged:
            try:
                c.commit()
            except KafkaError as e:
                errors.append("commit: " + str(e))
            for r in out[logged:]:
                progress.log(event="record", partition=r["partition"], offset=r["offset"])
            logged = len(out)
    if a.get("kill_self"):
        os._exit(0)
    c.close()
    return {"records": out, "errors": errors}


def kp_admin(a):
    from kafka import KafkaAdminClient, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=a["bootstrap"])
    op = a["op"]
    try:
        if op == "list":
            return {"groups": sorted([{"group_id": g["group_id"], "state": g.get("group_state"),
                                       "protocol_type": g.get("protocol_type")}
                                      for g in admin.list_groups()],
                                     key=lambda g: g["group_id"])}
        if op == "describe":
            out = {}
            for gid, d in admin.describe_groups(a["groups"]).items():
                out[gid] = {"state": d["group_state"], "protocol_type": d["protocol_type"],
                            "protocol": d["protocol_data"],
                            "error": None if d.get("error") is None else str(d["error"]),
                            "members": sorted([{"client_id": m.get("client_id"),
                                                "host": m.get("client_host"),
                                                "instance": m.get("group_instance_id")}
                                               for m in d["members"]],
                                              key=lambda m: str(m["client_id"]))}
            return out
        if op == "delete":
            r = admin.delete_groups(a["groups"])
            return {gid: (None if str(res) == "OK" else str(res)) for gid, res in r.items()}
        if op == "offsets":
            r = admin.list_group_offsets(a["group"])
            # kafka-python 3 answers {group: {partition: offset}}.
            r = r.get(a["group"], r)
            return {str(tp.partition): om.offset for tp, om in r.items() if tp.topic == a["topic"]}
        if op == "delete_offsets":
            tps = [TopicPartition(a["topic"], p) for p in a["partitions"]]
            r = admin.delete_group_offsets(a["group"], tps)
            # kafka-python reports success as the NoError class (errno 0).
            return {str(tp.partition): (None if getattr(e, "errno", 0) == 0 else str(e))
                    for tp, e in r.items()}
        raise SystemExit(f"unknown admin op {op}")
    finally:
        admin.close()


OPS = {
    "rdkafka": {"member": rd_member, "admin": rd_admin},
    "kafka-python": {"member": kp_member, "admin": kp_admin},
}

if __name__ == "__main__":
    client, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(OPS[client][op](args)))
