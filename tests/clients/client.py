"""Drives a real Kafka client against a broker for the Rust tests.

Usage: client.py CLIENT OP JSON_ARGS
  CLIENT: "rdkafka" (confluent-kafka, i.e. librdkafka) or "kafka-python"
  OP:     produce | consume | admin | list_offsets
Prints one JSON document on stdout; exits non-zero (with the error on stderr) on failure.

Keys, values and header values are UTF-8 strings in JSON (null for null). A record may give
"value_size": N instead of a value, for a value of N bytes of b"x" (consumers then report
"value_size" and a checksum instead of the bytes).

consume takes an optional "client_rack" (librdkafka's client.rack, kafka-python's client_rack):
the rack a fetch names, so a rack-aware broker can send the consumer to a follower (KIP-392).
"""

import hashlib
import json
import sys
import time


def enc(s):
    return None if s is None else s.encode("utf-8")


def dec(b):
    return None if b is None else b.decode("utf-8", "replace")


def record_value(r):
    if "value_size" in r:
        return b"x" * r["value_size"]
    return enc(r.get("value"))


def describe_value(v, big):
    if v is not None and len(v) > big:
        return {"value_size": len(v), "value_sha1": hashlib.sha1(v).hexdigest()}
    return {"value": dec(v)}


def headers_out(h):
    return [[k, dec(v)] for k, v in (h or [])]


# ---------------------------------------------------------------- librdkafka (confluent-kafka)

def rd_produce(a):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": a["bootstrap"],
        "acks": str(a.get("acks", "all")),
        "compression.type": a.get("compression", "none"),
        "message.max.bytes": 4 * 1024 * 1024,
        "linger.ms": a.get("linger_ms", 5),
        "enable.idempotence": a.get("idempotent", False),
    }
    conf.update(a.get("extra", {}))
    p = Producer(conf)
    results = []

    def cb(err, msg):
        results.append({"error": None if err is None else str(err),
                        "partition": msg.partition(), "offset": msg.offset()})

    for r in a["records"]:
        kw = {"key": enc(r.get("key")), "value": record_value(r), "on_delivery": cb}
        if r.get("headers") is not None:
            kw["headers"] = [(k, enc(v)) for k, v in r["headers"]]
        if r.get("timestamp") is not None:
            kw["timestamp"] = r["timestamp"]
        if a.get("partition") is not None:
            kw["partition"] = a["partition"]
        p.produce(a["topic"], **kw)
        p.poll(0)
    left = p.flush(a.get("timeout", 30))
    if left:
        raise SystemExit(f"{left} records not delivered")
    return {"results": results}


def rd_consume(a):
    from confluent_kafka import Consumer, TopicPartition

    conf = {
        "bootstrap.servers": a["bootstrap"],
        # librdkafka wants a group id even for manual assignment; no group APIs are used.
        "group.id": "fjord-test",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    }
    if a.get("client_rack") is not None:
        conf["client.rack"] = a["client_rack"]
    c = Consumer(conf)
    c.assign([TopicPartition(a["topic"], p, a.get("offset", 0)) for p in a["partitions"]])
    out = []
    deadline = time.time() + a.get("timeout", 30)
    while len(out) < a["count"] and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                continue
            raise SystemExit(f"consume error: {m.error()}")
        ts_type, ts = m.timestamp()
        rec = {"partition": m.partition(), "offset": m.offset(), "key": dec(m.key()),
               "headers": headers_out(m.headers()), "timestamp": ts}
        rec.update(describe_value(m.value(), a.get("big", 4096)))
        out.append(rec)
    c.close()
    return {"records": out}


def rd_list_offsets(a):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": a["bootstrap"], "group.id": "fjord-test"})
    tp = TopicPartition(a["topic"], a["partition"])
    low, high = c.get_watermark_offsets(tp, timeout=10)
    res = {"earliest": low, "latest": high}
    if "timestamp" in a:
        found = c.offsets_for_times([TopicPartition(a["topic"], a["partition"], a["timestamp"])],
                                    timeout=10)
        res["for_timestamp"] = found[0].offset
    c.close()
    return res


def rd_admin(a):
    from confluent_kafka.admin import (AdminClient, ConfigResource, NewPartitions, NewTopic)

    admin = AdminClient({"bootstrap.servers": a["bootstrap"]})
    op = a["op"]
    if op == "create_topics":
        fs = admin.create_topics([
            NewTopic(t["name"], num_partitions=t.get("partitions", 1), replication_factor=1,
                     config=t.get("config", {}))
            for t in a["topics"]], operation_timeout=10)
        return {name: err_of(f) for name, f in fs.items()}
    if op == "delete_topics":
        fs = admin.delete_topics(a["topics"], operation_timeout=10)
        return {name: err_of(f) for name, f in fs.items()}
    if op == "create_partitions":
        fs = admin.create_partitions([NewPartitions(a["topic"], a["count"])])
        return {name: err_of(f) for name, f in fs.items()}
    if op == "list_topics":
        md = admin.list_topics(timeout=10)
        return {name: len(t.partitions) for name, t in md.topics.items()}
    if op == "describe_configs":
        fs = admin.describe_configs([ConfigResource("topic", a["topic"])])
        (res, f), = fs.items()
        return {k: {"value": v.value, "source": int(v.source), "is_default": v.is_default}
                for k, v in f.result(10).items()}
    if op == "alter_configs":
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                   for k, v in a["set"].items()]
        fs = admin.incremental_alter_configs([ConfigResource("topic", a["topic"],
                                                             incremental_configs=entries)])
        return {str(r): err_of(f) for r, f in fs.items()}
    if op == "elect_leaders":
        from confluent_kafka import TopicPartition
        from confluent_kafka import ElectionType
        kind = ElectionType.PREFERRED if a.get("election", 0) == 0 else ElectionType.UNCLEAN
        # No timeout kwargs: confluent-kafka 2.16's binding rejects them for this call.
        f = admin.elect_leaders(kind, [TopicPartition(a["topic"], p) for p in a["partitions"]])
        return {f"{tp.topic}-{tp.partition}": (None if e is None else str(e))
                for tp, e in f.result(30).items()}
    raise SystemExit(f"unknown admin op {op}")


def err_of(f):
    try:
        f.result(15)
        return None
    except Exception as e:  # noqa: BLE001 - the test asserts on the message
        return str(e)


# ---------------------------------------------------------------- kafka-python

def kp_produce(a):
    from kafka import KafkaProducer

    acks = a.get("acks", "all")
    acks = {"all": "all", "-1": "all", -1: "all"}.get(acks, int(acks) if acks != "all" else acks)
    comp = a.get("compression", "none")
    p = KafkaProducer(
        bootstrap_servers=a["bootstrap"], acks=acks,
        compression_type=None if comp == "none" else comp,
        max_request_size=4 * 1024 * 1024, linger_ms=a.get("linger_ms", 5),
        enable_idempotence=a.get("idempotent", False),
        **a.get("extra", {}))
    futures = []
    for r in a["records"]:
        futures.append(p.send(a["topic"], key=enc(r.get("key")), value=record_value(r),
                              headers=[(k, enc(v)) for k, v in (r.get("headers") or [])],
                              timestamp_ms=r.get("timestamp"), partition=a.get("partition")))
    p.flush(a.get("timeout", 30))
    results = []
    for f in futures:
        try:
            md = f.get(a.get("timeout", 30))
            results.append({"error": None, "partition": md.partition, "offset": md.offset})
        except Exception as e:  # noqa: BLE001
            results.append({"error": str(e), "partition": None, "offset": None})
    p.close()
    return {"results": results}


def kp_consume(a):
    from kafka import KafkaConsumer, TopicPartition

    rack = {} if a.get("client_rack") is None else {"client_rack": a["client_rack"]}
    c = KafkaConsumer(bootstrap_servers=a["bootstrap"], enable_auto_commit=False,
                      group_id=None, fetch_max_wait_ms=100, **rack)
    tps = [TopicPartition(a["topic"], p) for p in a["partitions"]]
    c.assign(tps)
    for tp in tps:
        c.seek(tp, a.get("offset", 0))
    out = []
    deadline = time.time() + a.get("timeout", 30)
    while len(out) < a["count"] and time.time() < deadline:
        for _, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                rec = {"partition": m.partition, "offset": m.offset, "key": dec(m.key),
                       "headers": headers_out(m.headers), "timestamp": m.timestamp}
                rec.update(describe_value(m.value, a.get("big", 4096)))
                out.append(rec)
    c.close()
    out.sort(key=lambda r: (r["partition"], r["offset"]))
    return {"records": out}


def kp_list_offsets(a):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=a["bootstrap"], group_id=None)
    tp = TopicPartition(a["topic"], a["partition"])
    res = {"earliest": c.beginning_offsets([tp])[tp], "latest": c.end_offsets([tp])[tp]}
    if "timestamp" in a:
        found = c.offsets_for_times({tp: a["timestamp"]})[tp]
        res["for_timestamp"] = None if found is None else found.offset
    c.close()
    return res


def kp_admin(a):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=a["bootstrap"])
    op = a["op"]
    try:
        if op == "create_topics":
            try:
                r = admin.create_topics([NewTopic(t["name"], t.get("partitions", 1), 1,
                                              topic_configs=t.get("config", {}))
                                         for t in a["topics"]], timeout_ms=10000)
            except Exception as e:  # noqa: BLE001 - kafka-python raises on any topic error
                return {t["name"]: str(e) for t in a["topics"]}
            return {t["name"]: (None if t["error_code"] == 0 else
                                f"{t['error_code']}: {t['error_message']}")
                    for t in r["topics"]} if isinstance(r, dict) else {"raw": str(r)}
        if op == "delete_topics":
            try:
                admin.delete_topics(a["topics"], timeout_ms=10000)
                return {t: None for t in a["topics"]}
            except Exception as e:  # noqa: BLE001
                return {t: str(e) for t in a["topics"]}
        if op == "create_partitions":
            admin.create_partitions({a["topic"]: NewPartitions(a["count"])})
            return {a["topic"]: None}
        if op == "list_topics":
            return {t: None for t in admin.list_topics()}
        if op == "describe_configs":
            r = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, a["topic"])])
            return describe_result(r)
        if op == "alter_configs":
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, a["topic"],
                                                configs=a["set"])])
            return {"ok": None}
        if op == "elect_leaders":
            r = admin.elect_leaders(a.get("election", 0), {a["topic"]: a["partitions"]},
                                    timeout_ms=10000, raise_errors=False)
            out = {}
            for res in r.replica_election_results:
                for p in res.partition_result:
                    out[f"{res.topic}-{p.partition_id}"] = (
                        None if p.error_code == 0 else f"error {p.error_code}")
            return out
        if op == "alter_reassignments":
            # {"topic": t, "assignments": {"0": [3, 2], "1": null}}; null cancels.
            from kafka import TopicPartition
            r = admin.alter_partition_reassignments(
                {TopicPartition(a["topic"], int(p)): replicas
                 for p, replicas in a["assignments"].items()}, timeout_ms=10000)
            return {str(tp.partition): (None if err is None else err.__name__)
                    for tp, err in r.items()}
        if op == "list_reassignments":
            from kafka import TopicPartition
            asked = None if a.get("partitions") is None else [
                TopicPartition(a["topic"], p) for p in a["partitions"]]
            r = admin.list_partition_reassignments(asked, timeout_ms=10000)
            return {f"{tp.topic}-{tp.partition}": v for tp, v in r.items()}
        raise SystemExit(f"unknown admin op {op}")
    finally:
        admin.close()


def describe_result(r):
    """Normalises kafka-python's DescribeConfigs answer (its shape varies by version)."""
    out = {}
    if isinstance(r, dict) and "topic" in r:
        for configs in r["topic"].values():
            for k, c in configs.items():
                out[k] = {"value": c.get("value"), "source": c.get("config_source")}
        return out
    items = r if isinstance(r, list) else [r]
    for resp in items:
        data = resp.to_object() if hasattr(resp, "to_object") else resp
        if isinstance(data, dict):
            results = data.get("results") or data.get("resources") or []
            for res in results:
                for c in res.get("configs") or res.get("config_entries") or []:
                    out[c.get("name") or c.get("config_names")] = {
                        "value": c.get("value") if "value" in c else c.get("config_value"),
                        "source": c.get("config_source"),
                    }
        else:
            out["raw"] = str(data)
    return out


OPS = {
    "rdkafka": {"produce": rd_produce, "consume": rd_consume, "admin": rd_admin,
                "list_offsets": rd_list_offsets},
    "kafka-python": {"produce": kp_produce, "consume": kp_consume, "admin": kp_admin,
                     "list_offsets": kp_list_offsets},
}

if __name__ == "__main__":
    client, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(OPS[client][op](args)))
