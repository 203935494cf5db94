#!/usr/bin/env python3
"""Synthetic card payments in a schema of their own (not txguard's generator's), for
sql/examples/card_payments.sql: card ids, amounts in cents, currencies, countries, channels and
a nested merchant object, with labelled fraud (`is_fraud`, `pattern`):

* card_testing - 6-15 tiny online payments at new merchants within minutes;
* amount_spike - one payment 15-60x the card's usual amount;
* risky_mcc    - money transfer / gambling / crypto merchant categories abroad at night.

Deterministic for a seed. Writes JSON lines (default), or Avro: an object container file
(`--format avro`), or Avro datums in Confluent's wire format to a Kafka topic through
kafka-python with the schema registered under `<topic>-value` (`--kafka`, `--registry`).

    python3 scripts/card_payments.py --count 20000 -o data/card_payments.jsonl
"""

import argparse
import datetime as dt
import io
import json
import random
import struct
import sys
import urllib.request

AVRO_SCHEMA = {
    "type": "record",
    "name": "Payment",
    "namespace": "com.example.cards",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "card_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
        {"name": "country", "type": ["null", "string"], "default": None},
        {"name": "channel", "type": ["null", "string"], "default": None},
        {
            "name": "merchant",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Merchant",
                    "fields": [
                        {"name": "id", "type": "string"},
                        {"name": "mcc", "type": "string"},
                        {"name": "name", "type": ["null", "string"], "default": None},
                    ],
                },
            ],
            "default": None,
        },
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "is_fraud", "type": ["null", "boolean"], "default": None},
        {"name": "pattern", "type": ["null", "string"], "default": None},
    ],
}

HOME = [("US", "USD"), ("GB", "GBP"), ("DE", "EUR"), ("FR", "EUR"), ("JP", "JPY")]
EVERYDAY_MCC = ["5411", "5812", "5814", "5541", "5912", "5311", "4111", "5999"]
RISKY_MCC = ["6051", "7995", "4829", "6540"]
START = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def payments(count, cards, fraud_rate, seed):
    """`count` payments in event-time order, ids numbered in that order."""
    rnd = random.Random(seed)
    home = {c: rnd.choice(HOME) for c in range(cards)}
    typical = {c: rnd.lognormvariate(7.8, 0.7) for c in range(cards)}  # cents, ~25 USD
    out = []
    t = START
    while len(out) < count:
        t += dt.timedelta(seconds=rnd.expovariate(2.0))
        c = rnd.randrange(cards)
        country, currency = home[c]
        base = dict(
            card_id=f"card-{c:06d}",
            currency=currency,
            country=country,
            channel=rnd.choice(["pos", "pos", "online", "contactless"]),
            merchant={"id": f"m-{rnd.randrange(400):04d}", "mcc": rnd.choice(EVERYDAY_MCC), "name": None},
            is_fraud=False,
            pattern=None,
        )
        if rnd.random() >= fraud_rate:
            amount = max(1, int(rnd.lognormvariate(0, 0.6) * typical[c]))
            out.append(dict(base, amount_cents=amount, created_at=t))
            continue
        kind = rnd.choice(["card_testing", "amount_spike", "risky_mcc"])
        if kind == "card_testing":
            at = t
            for _ in range(rnd.randint(6, 15)):
                at += dt.timedelta(seconds=rnd.uniform(5, 60))
                out.append(dict(base, channel="online", is_fraud=True, pattern=kind,
                                amount_cents=rnd.randint(50, 299), created_at=at,
                                merchant={"id": f"m-new-{rnd.randrange(10**6):06d}", "mcc": "5999", "name": None}))
        elif kind == "amount_spike":
            out.append(dict(base, is_fraud=True, pattern=kind, created_at=t,
                            amount_cents=int(typical[c] * rnd.uniform(15, 60))))
        else:
            abroad = rnd.choice([h for h in HOME if h[0] != country])
            out.append(dict(base, is_fraud=True, pattern=kind, country=abroad[0], channel="online",
                            amount_cents=int(typical[c] * rnd.uniform(3, 10)), created_at=t,
                            merchant={"id": f"m-x-{rnd.randrange(1000):04d}", "mcc": rnd.choice(RISKY_MCC), "name": None}))
    out.sort(key=lambda p: p["created_at"])
    for i, p in enumerate(out[:count]):
        p["payment_id"] = f"pay-{i:08d}"
        yield p


def as_json(p):
    q = dict(p)
    q["created_at"] = p["created_at"].isoformat()
    return json.dumps(q, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--cards", type=int, default=500)
    ap.add_argument("--fraud-rate", type=float, default=0.004)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--format", choices=["json", "avro"], default="json")
    ap.add_argument("-o", "--output", help="file to write (default stdout; JSON only)")
    ap.add_argument("--kafka", help="bootstrap servers: send Avro in Confluent's wire format")
    ap.add_argument("--topic", default="card_payments")
    ap.add_argument("--registry", help="schema registry URL (with --kafka)")
    a = ap.parse_args()
    rows = payments(a.count, a.cards, a.fraud_rate, a.seed)
    if a.kafka:
        send_confluent(rows, a.kafka, a.topic, a.registry)
    elif a.format == "avro":
        import fastavro

        with open(a.output, "wb") as f:
            fastavro.writer(f, fastavro.parse_schema(AVRO_SCHEMA), list(rows))
    else:
        out = open(a.output, "w") if a.output else sys.stdout
        for p in rows:
            out.write(as_json(p) + "\n")
        out.close()


def send_confluent(rows, servers, topic, registry):
    import fastavro
    from kafka import KafkaProducer

    req = urllib.request.Request(
        f"{registry}/subjects/{topic}-value/versions",
        data=json.dumps({"schema": json.dumps(AVRO_SCHEMA)}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        schema_id = json.load(r)["id"]
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    producer = KafkaProducer(bootstrap_servers=servers)
    n = 0
    for p in rows:
        buf = io.BytesIO()
        buf.write(struct.pack(">bI", 0, schema_id))
        fastavro.schemaless_writer(buf, parsed, p)
        producer.send(topic, buf.getvalue(), key=p["card_id"].encode())
        n += 1
    producer.flush()
    print(json.dumps({"sent": n, "schema_id": schema_id}))


if __name__ == "__main__":
    main()
