"""An independent Kafka client for the broker tests (kafka-python, pure Python, installed by
scripts/setup.sh). Produces messages the way the Python producers in the wild do, and reads
a topic back.

    client.py produce BOOTSTRAP TOPIC COUNT SEED [START]   prints {"sent": n, "bad": k}
    client.py read BOOTSTRAP TOPIC [CAFILE]                prints {"messages": n, "ids": [...], "keyed": bool}
    client.py read_committed BOOTSTRAP TOPIC               the same, as a read_committed consumer

With CAFILE the reader connects over TLS and verifies the broker's certificate against it.
"""

import datetime
import json
import random
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def produce(bootstrap, topic, count, seed, start=0):
    rng = random.Random(seed)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    t0 = datetime.datetime(2026, 3, 1, 12, 0, 0)
    bad = 0
    for i in range(start, start + count):
        user = f"user_{rng.randrange(2000):04d}"
        ts = t0 + datetime.timedelta(seconds=i * 0.5, microseconds=rng.randrange(1_000_000))
        if i % 1000 == 999:
            # Unusable: what a broken producer sends now and then.
            value = rng.choice([b"{not json", json.dumps({"user_id": user}).encode()])
            bad += 1
        else:
            tx = {
                "transaction_id": f"py-{seed}-{i}",
                "user_id": user,
                # json.dumps of a naive datetime.isoformat(): no zone, microseconds.
                "timestamp": ts.isoformat(),
                "amount": round(rng.lognormvariate(3.5, 1.0), 2),
            }
            if i % 3 == 0:
                tx["amount"] = str(tx["amount"])  # amounts as strings
            if i % 5 == 0:
                tx["merchant"] = f"m{rng.randrange(300)}"
                tx["category"] = rng.choice(["grocery", "travel", "electronics", "fuel"])
                tx["device_id"] = "d1"  # a field the contract does not know
            if i % 2 == 0:
                tx = dict(reversed(list(tx.items())))  # another key order
            value = json.dumps(tx).encode()
        p.send(topic, key=user.encode(), value=value)
    p.flush()
    p.close()
    print(json.dumps({"sent": count, "bad": bad}))


def read(bootstrap, topic, cafile=None, isolation="read_uncommitted"):
    """Every message from the beginning, until none has come for 5 s (end offsets are not
    used: tansu 0.6's ListOffsets answer was seen short of the last offset)."""
    tls = {"security_protocol": "SSL", "ssl_cafile": cafile} if cafile else {}
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=5000, isolation_level=isolation, **tls)
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or []]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    ids, keyed = [], True
    for r in c:
        v = json.loads(r.value)
        ids.append(v["transaction_id"])
        keyed = keyed and r.key is not None and r.key.decode() == v["user_id"]
    c.close()
    print(json.dumps({"messages": len(ids), "ids": ids, "keyed": keyed}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                int(sys.argv[6]) if len(sys.argv) > 6 else 0)
    elif cmd == "read":
        read(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "read_committed":
        read(sys.argv[2], sys.argv[3], isolation="read_committed")
    else:
        sys.exit(f"unknown command {cmd}")
