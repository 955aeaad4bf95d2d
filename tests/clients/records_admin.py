"""DeleteRecords, DescribeTopicPartitions and earliest-offset consumption with real clients, for
the Rust tests (tests/tests/delete_records.rs, tests/tests/describe_topic_partitions.rs).

Usage: records_admin.py CLIENT OP JSON_ARGS
  CLIENT: "rdkafka" (confluent-kafka, i.e. librdkafka) or "kafka-python"
  OP:     delete_records | consume_from | describe_topic_partitions
Prints one JSON document on stdout; exits non-zero (with the error on stderr) on failure.
"""

import json
import sys
import time


def key(topic, partition):
    return f"{topic}:{partition}"


# ---------------------------------------------------------------- librdkafka (confluent-kafka)

def rd_delete_records(a):
    """a["deletes"]: [[topic, partition, offset], ...] -> {"topic:partition": result}."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": a["bootstrap"]})
    futures = admin.delete_records([TopicPartition(t, p, o) for t, p, o in a["deletes"]],
                                   request_timeout=15, operation_timeout=10)
    out = {}
    for tp, f in futures.items():
        try:
            out[key(tp.topic, tp.partition)] = {"low_watermark": f.result(20).low_watermark}
        except KafkaException as e:
            err = e.args[0]
            out[key(tp.topic, tp.partition)] = {"error": str(err), "code": err.code()}
    return out


def rd_consume_from(a):
    """Assigns one partition at a["offset"] with auto.offset.reset=earliest; returns the offsets
    of the first a["count"] records."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": a["bootstrap"],
        "group.id": "fjord-test",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    })
    c.assign([TopicPartition(a["topic"], a["partition"], a["offset"])])
    offsets = []
    deadline = time.time() + a.get("timeout", 30)
    while len(offsets) < a["count"] and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                continue
            raise SystemExit(f"consume error: {m.error()}")
        offsets.append(m.offset())
    c.close()
    return {"offsets": offsets}


# ---------------------------------------------------------------- kafka-python

def kp_delete_records(a):
    from kafka import KafkaAdminClient, TopicPartition
    import kafka.errors as Errors

    admin = KafkaAdminClient(bootstrap_servers=a["bootstrap"])
    try:
        wanted = {TopicPartition(t, p): o for t, p, o in a["deletes"]}
        try:
            r = admin.delete_records(wanted, timeout_ms=10000)
        except Errors.KafkaError as e:
            # kafka-python raises one error for the whole call; report it for every partition.
            code = getattr(e, "errno", None)
            return {key(tp.topic, tp.partition): {"error": repr(e), "code": code}
                    for tp in wanted}
        return {key(tp.topic, tp.partition): {"low_watermark": res["low_watermark"]}
                for tp, res in r.items()}
    finally:
        admin.close()


def kp_consume_from(a):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=a["bootstrap"], enable_auto_commit=False, group_id=None,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tp = TopicPartition(a["topic"], a["partition"])
    c.assign([tp])
    c.seek(tp, a["offset"])
    offsets = []
    deadline = time.time() + a.get("timeout", 30)
    while len(offsets) < a["count"] and time.time() < deadline:
        for _, msgs in c.poll(timeout_ms=500).items():
            offsets.extend(m.offset for m in msgs)
    c.close()
    return {"offsets": sorted(offsets)[:a["count"]]}


def kp_describe_topic_partitions(a):
    """One DescribeTopicPartitions call, or (a["all_pages"]) every page until no cursor."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=a["bootstrap"])
    try:
        pages = []
        cursor = a.get("cursor")
        for _ in range(1000):
            r = admin.describe_topic_partitions(a.get("topics", []),
                                                response_partition_limit=a.get("limit", 2000),
                                                cursor=cursor)
            for t in r["topics"]:
                t["topic_id"] = str(t["topic_id"])
            pages.append(r)
            cursor = r["next_cursor"]
            if not a.get("all_pages") or cursor is None:
                break
        return {"pages": pages}
    finally:
        admin.close()


OPS = {
    "rdkafka": {"delete_records": rd_delete_records, "consume_from": rd_consume_from},
    "kafka-python": {"delete_records": kp_delete_records, "consume_from": kp_consume_from,
                     "describe_topic_partitions": kp_describe_topic_partitions},
}

if __name__ == "__main__":
    client, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(OPS[client][op](args)))
