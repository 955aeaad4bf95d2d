"""Long-running librdkafka (confluent-kafka) clients for the chaos suite (tests/tests/chaos.rs).

Usage: chaos_client.py ROLE JSON_ARGS
  ROLE producer: an idempotent acks=all producer writing unique values until stdin closes.
         args: bootstrap, topic, partitions, id, out, rate (records/s)
         `out` gets one JSON line per delivery report, in the order librdkafka reports them
         (per partition, the order the broker acknowledged them):
           {"i": instance, "v": value, "p": partition, "o": offset, "t": ms}   acknowledged
           {"i": instance, "v": value, "p": partition, "err": "...", "t": ms}  failed
           {"i": instance, "fatal": "...", "t": ms}                             producer fatal
         A fatal error (the idempotent producer cannot continue) is recorded and a new producer
         instance takes over; values carry the instance, so each is unique across instances.
  ROLE consumer: a consumer in group `group`, subscribed to `topic`, until stdin closes.
         args: bootstrap, topic, group, out
         `out` gets {"p", "o", "v", "t"} per record received, {"err": "..."} per client error,
         and {"assigned": [partitions], "t"} / {"revoked": [...], "t"} on each rebalance.
Both accept "debug": a librdkafka debug context list (logged on stderr).
On exit each role prints one JSON summary line on stdout.
"""

import json
import sys
import threading
import time


def now_ms():
    return int(time.time() * 1000)


def stdin_closed(stop):
    # The test closes our stdin to stop us (and it is closed if the test dies).
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()


def open_out(path):
    # Line-buffered: the test reads the file after we exit, and a crash keeps what was written.
    return open(path, "a", buffering=1, encoding="utf-8")


def producer(a):
    from confluent_kafka import KafkaError, Producer

    stop = threading.Event()
    threading.Thread(target=stdin_closed, args=(stop,), daemon=True).start()
    out = open_out(a["out"])
    lock = threading.Lock()
    stats = {"sent": 0, "acked": 0, "failed": 0, "fatal": 0, "errors": {}, "instances": 0,
             "undelivered_at_exit": 0}
    fatal = threading.Event()

    def write(obj):
        with lock:
            out.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def new_producer(instance):
        def on_error(err):
            if err.fatal():
                stats["fatal"] += 1
                write({"i": instance, "fatal": str(err), "t": now_ms()})
                fatal.set()

        def on_delivery(err, msg):
            v = msg.value().decode()
            if err is None:
                stats["acked"] += 1
                write({"i": instance, "v": v, "p": msg.partition(), "o": msg.offset(),
                       "t": now_ms()})
            else:
                stats["failed"] += 1
                name = err.name()
                stats["errors"][name] = stats["errors"].get(name, 0) + 1
                write({"i": instance, "v": v, "p": msg.partition(), "err": str(err),
                       "t": now_ms()})

        p = Producer({
            "bootstrap.servers": a["bootstrap"],
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "request.timeout.ms": 10000,
            # Long enough to ride out every failover of a run; a timed-out idempotent batch
            # would make its fate unknown.
            "message.timeout.ms": 120000,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 2000,
            "error_cb": on_error,
            **({"debug": a["debug"]} if a.get("debug") else {}),
        })
        return p, on_delivery

    instance_no = 0
    instance = f'{a["id"]}.{instance_no}'
    p, cb = new_producer(instance)
    stats["instances"] = 1
    seq = 0
    partitions = a["partitions"]
    interval = 1.0 / a.get("rate", 200)
    next_at = time.time()
    while not stop.is_set():
        if fatal.is_set():
            # The instance is unusable: what it has not delivered is unknown. Start another.
            p.purge()
            p.flush(5)
            instance_no += 1
            instance = f'{a["id"]}.{instance_no}'
            p, cb = new_producer(instance)
            stats["instances"] += 1
            fatal.clear()
        value = f"{instance}-{seq}"
        try:
            p.produce(a["topic"], value=value.encode(), partition=seq % partitions,
                      on_delivery=cb)
            stats["sent"] += 1
            seq += 1
        except BufferError:
            pass
        except Exception as e:  # noqa: BLE001 - record and keep going, the test decides
            stats["errors"][type(e).__name__] = stats["errors"].get(type(e).__name__, 0) + 1
        p.poll(0)
        next_at += interval
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.time()
    left = p.flush(a.get("flush_timeout", 30))
    stats["undelivered_at_exit"] = left
    out.close()
    print(json.dumps(stats))


def consumer(a):
    from confluent_kafka import Consumer, KafkaError

    stop = threading.Event()
    threading.Thread(target=stdin_closed, args=(stop,), daemon=True).start()
    out = open_out(a["out"])
    stats = {"received": 0, "errors": {}}

    def on_error(err):
        stats["errors"][err.name()] = stats["errors"].get(err.name(), 0) + 1

    c = Consumer({
        "bootstrap.servers": a["bootstrap"],
        "group.id": a["group"],
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 200,
        "topic.metadata.refresh.interval.ms": 2000,
        "error_cb": on_error,
        **({"debug": a["debug"]} if a.get("debug") else {}),
    })

    def on_assign(_c, parts):
        out.write(json.dumps({"assigned": [p.partition for p in parts], "t": now_ms()}) + "\n")

    def on_revoke(_c, parts):
        out.write(json.dumps({"revoked": [p.partition for p in parts], "t": now_ms()}) + "\n")

    c.subscribe([a["topic"]], on_assign=on_assign, on_revoke=on_revoke)
    while not stop.is_set():
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                out.write(json.dumps({"err": str(m.error()), "t": now_ms()}) + "\n")
            continue
        stats["received"] += 1
        out.write(json.dumps({"p": m.partition(), "o": m.offset(),
                              "v": m.value().decode("utf-8", "replace"), "t": now_ms()},
                             separators=(",", ":")) + "\n")
    try:
        c.close()
    except Exception as e:  # noqa: BLE001
        stats["errors"]["close"] = str(e)
    out.close()
    print(json.dumps(stats))


if __name__ == "__main__":
    role, args = sys.argv[1], json.loads(sys.argv[2])
    {"producer": producer, "consumer": consumer}[role](args)
