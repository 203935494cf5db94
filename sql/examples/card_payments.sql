-- Card payments in a schema of their own: card ids, amounts in cents, currencies, countries,
-- channels and a nested merchant object — none of txguard's default names. The table's DDL is
-- the schema: the decoder fills these columns by field name (JSON lines here; the same DDL
-- reads Avro with `format = 'avro'`), the contract is NOT NULL columns and CHECKs, and the
-- per-card features are OVER windows over `created_at`.
--
--   python3 scripts/card_payments.py --count 20000 -o data/card_payments.jsonl
--   txguard train --pipeline sql/examples/card_payments.sql -o models/card_payments.json
--   txguard run sql/examples/card_payments.sql --model models/card_payments.json

CREATE TABLE payments (
    payment_id TEXT NOT NULL CHECK (payment_id <> ''),
    card_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CONSTRAINT amount_not_negative CHECK (amount_cents >= 0),
    currency TEXT NOT NULL,
    country TEXT,
    channel TEXT,
    merchant STRUCT<id TEXT, mcc TEXT, name TEXT>,
    created_at TIMESTAMP NOT NULL,
    is_fraud BOOLEAN,
    pattern TEXT,
    WATERMARK FOR created_at AS created_at - INTERVAL '10' SECOND
) WITH (
    connector = 'file',
    path = 'data/card_payments.jsonl',
    format = 'json'
);

CREATE TABLE card_scored (
    payment_id TEXT NOT NULL,
    card_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT,
    country TEXT,
    mcc TEXT,
    is_fraud BOOLEAN,
    pattern TEXT,
    score DOUBLE,
    is_anomaly BOOLEAN,
    model_version TEXT
) WITH (connector = 'delta', path = './data/card_scored');

CREATE TABLE card_alerts (
    payment_id TEXT NOT NULL,
    card_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    amount_cents BIGINT NOT NULL,
    mcc TEXT,
    score DOUBLE,
    pattern TEXT
) WITH (connector = 'delta', path = './data/card_alerts');

CREATE TABLE card_dead_letters (
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL
) WITH (connector = 'delta', path = './data/card_dead_letters');

-- Per-card history: counts and amounts over the last 10 minutes, hour and day, and the
-- previous payment.
CREATE VIEW card_history AS
SELECT
    payment_id, card_id, created_at, amount_cents, currency, country, channel,
    merchant['mcc'] AS mcc, is_fraud, pattern,
    COUNT(*) OVER (PARTITION BY card_id ORDER BY created_at
        RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW) AS tx_10m,
    COUNT(*) OVER (PARTITION BY card_id ORDER BY created_at
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS tx_24h,
    AVG(CAST(amount_cents AS DOUBLE)) OVER (PARTITION BY card_id ORDER BY created_at
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS mean_cents_24h,
    SUM(CASE WHEN amount_cents < 300 THEN 1 ELSE 0 END) OVER (PARTITION BY card_id
        ORDER BY created_at RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)
        AS small_1h,
    LAG(CAST(created_at AS BIGINT)) OVER (PARTITION BY card_id ORDER BY created_at) AS prev_us
FROM payments;

-- The model's features: every column after the label.
CREATE VIEW card_features AS
SELECT
    payment_id, card_id, created_at, amount_cents, currency, country, mcc, pattern, is_fraud,
    ln(1 + amount_cents / 100.0) AS log_amount,
    CAST(tx_10m AS DOUBLE) AS tx_10m,
    CAST(tx_24h AS DOUBLE) AS tx_24h,
    COALESCE(amount_cents / NULLIF(mean_cents_24h, 0), 1) AS amount_to_mean,
    COALESCE((CAST(created_at AS BIGINT) - prev_us) / 1e6, 86400) AS seconds_since_prev,
    CAST(small_1h AS DOUBLE) AS small_1h,
    CASE WHEN mcc IN ('6051', '7995', '4829', '6540') THEN 1.0 ELSE 0.0 END AS risky_mcc,
    CASE WHEN channel = 'online' THEN 1.0 ELSE 0.0 END AS online,
    CAST(date_part('hour', created_at) AS DOUBLE) AS hour_of_day
FROM card_history;

CREATE VIEW card_scores AS
SELECT *, score > iforest_threshold() AS is_anomaly, iforest_model_version() AS model_version
FROM (
    SELECT *,
        iforest_score(log_amount, tx_10m, tx_24h, amount_to_mean, seconds_since_prev,
            small_1h, risky_mcc, online, hour_of_day) AS score
    FROM card_features
);

INSERT INTO card_scored
SELECT payment_id, card_id, created_at, amount_cents, currency, country, mcc, is_fraud, pattern,
       score, is_anomaly, model_version
FROM card_scores;

INSERT INTO card_alerts
SELECT payment_id, card_id, created_at, amount_cents, mcc, score, pattern
FROM card_scores
WHERE is_anomaly;

INSERT INTO card_dead_letters SELECT * FROM txguard_dead_letters;
