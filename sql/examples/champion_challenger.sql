-- Champion / challenger: the default pipeline's features scored by two models on the same
-- rows, the champion (model `default`) deciding what is an anomaly and the challenger
-- (model `challenger`) scored in shadow beside it. Every row with both verdicts goes to the
-- Postgres table `shadow_scores`; the view `champion_challenger` (sql/postgres/views.sql)
-- compares them per pair of versions: how often they agree, what each flags alone, and
-- precision and recall against the `is_fraud` label where rows carry one. The console's
-- Models page shows the same comparison live (--console-shadow, default: the sink table
-- named `shadow_scores`).
--
--   txguard db init
--   txguard run sql/examples/champion_challenger.sql \
--       --model models/default.json --model challenger=models/challenger.json
--
-- Promote the challenger by swapping files (or registry aliases): each model is hot-swapped
-- between two epochs, and every row says which versions scored it.

CREATE TABLE transactions (
    transaction_id TEXT NOT NULL CHECK (transaction_id <> ''),
    user_id TEXT NOT NULL CHECK (user_id <> ''),
    amount DOUBLE NOT NULL CHECK (amount >= 0),
    ts TIMESTAMP NOT NULL,
    merchant TEXT,
    category TEXT,
    location TEXT,
    channel TEXT,
    lat DOUBLE CHECK (lat BETWEEN -90 AND 90),
    lon DOUBLE CHECK (lon BETWEEN -180 AND 180),
    is_fraud BOOLEAN,
    fraud_pattern TEXT,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    connector = 'generator',
    users = 10000,
    count = 200000,
    fraud_rate = 0.002,
    out_of_order = 0.01,
    max_delay_ms = 3000
);

CREATE TABLE shadow_scores (
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    ts TIMESTAMP NOT NULL,
    amount DOUBLE NOT NULL,
    is_fraud BOOLEAN,
    champion_version TEXT NOT NULL,
    champion_score DOUBLE,
    champion_flag BOOLEAN,
    challenger_version TEXT NOT NULL,
    challenger_score DOUBLE,
    challenger_flag BOOLEAN
) WITH (connector = 'postgres', table = 'shadow_scores');

CREATE TABLE anomalies (
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    ts TIMESTAMP NOT NULL,
    amount DOUBLE NOT NULL,
    merchant TEXT,
    category TEXT,
    location TEXT,
    score DOUBLE,
    is_fraud BOOLEAN,
    model_version TEXT,
    explanation TEXT
) WITH (connector = 'postgres', table = 'anomalies');

CREATE TABLE dead_letters (
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL
) WITH (connector = 'postgres', table = 'dead_letters');

-- Per-user history: counts, mean and spread of amounts, and the previous transaction.
CREATE VIEW history AS
SELECT
    transaction_id, user_id, ts, amount, merchant, category, location, channel, lat, lon,
    fraud_pattern, is_fraud,
    COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW) AS tx_count_10m,
    COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS tx_count_1h,
    SUM(CASE WHEN amount < 5 THEN 1 ELSE 0 END) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS small_amounts_1h,
    COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS tx_count_24h,
    AVG(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS amount_mean_24h,
    STDDEV(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS amount_std_24h,
    LAG(CAST(ts AS BIGINT)) OVER (PARTITION BY user_id ORDER BY ts) AS prev_ts_us,
    LAG(lat) OVER (PARTITION BY user_id ORDER BY ts) AS prev_lat,
    LAG(lon) OVER (PARTITION BY user_id ORDER BY ts) AS prev_lon
FROM transactions;

-- The model's features (every column after is_fraud), with neutral values where a user has
-- no history yet.
CREATE VIEW features AS
SELECT
    transaction_id, user_id, ts, amount, merchant, category, location, channel, fraud_pattern,
    is_fraud,
    ln(1 + amount) AS log_amount,
    tx_count_10m,
    tx_count_1h,
    tx_count_24h,
    amount_mean_24h,
    COALESCE(amount_std_24h, 0) AS amount_std_24h,
    COALESCE((amount - amount_mean_24h) / NULLIF(amount_std_24h, 0), 0) AS amount_zscore,
    COALESCE(amount / NULLIF(amount_mean_24h, 0), 1) AS amount_to_mean,
    COALESCE((CAST(ts AS BIGINT) - prev_ts_us) / 1e6, 86400) AS seconds_since_prev,
    COALESCE(km, 0) AS km_from_prev,
    COALESCE(km / (GREATEST((CAST(ts AS BIGINT) - prev_ts_us) / 1e6, 60) / 3600), 0) AS speed_kmh,
    CAST(date_part('hour', ts) AS DOUBLE) AS hour_of_day,
    CASE WHEN category IN ('electronics', 'jewelry', 'gift_cards', 'crypto') THEN 1.0 ELSE 0.0 END
        AS risky_category,
    CAST(small_amounts_1h AS DOUBLE) AS small_amounts_1h
FROM (
    SELECT *,
        2 * 6371 * asin(sqrt(
            power(sin(radians(lat - prev_lat) / 2), 2)
            + cos(radians(prev_lat)) * cos(radians(lat)) * power(sin(radians(lon - prev_lon) / 2), 2)
        )) AS km
    FROM history
);

-- Both models score every row; each flags by its own threshold.
CREATE VIEW scored AS
SELECT *,
    champion_score > iforest_threshold() AS champion_flag,
    iforest_model_version() AS champion_version,
    challenger_score > iforest_threshold_challenger() AS challenger_flag,
    iforest_model_version_challenger() AS challenger_version
FROM (
    SELECT *,
        iforest_score(log_amount, tx_count_10m, tx_count_1h, tx_count_24h, amount_mean_24h,
            amount_std_24h, amount_zscore, amount_to_mean, seconds_since_prev, km_from_prev,
            speed_kmh, hour_of_day, risky_category, small_amounts_1h) AS champion_score,
        iforest_score_challenger(log_amount, tx_count_10m, tx_count_1h, tx_count_24h,
            amount_mean_24h, amount_std_24h, amount_zscore, amount_to_mean, seconds_since_prev,
            km_from_prev, speed_kmh, hour_of_day, risky_category, small_amounts_1h)
            AS challenger_score
    FROM features
);

INSERT INTO shadow_scores
SELECT transaction_id, user_id, ts, amount, is_fraud, champion_version, champion_score,
       champion_flag, challenger_version, challenger_score, challenger_flag
FROM scored;

-- The champion decides: its anomalies, explained.
INSERT INTO anomalies
SELECT transaction_id, user_id, ts, amount, merchant, category, location, champion_score,
       is_fraud, champion_version,
       iforest_explain(log_amount, tx_count_10m, tx_count_1h, tx_count_24h, amount_mean_24h,
           amount_std_24h, amount_zscore, amount_to_mean, seconds_since_prev, km_from_prev,
           speed_kmh, hour_of_day, risky_category, small_amounts_1h)
FROM scored
WHERE champion_flag;

INSERT INTO dead_letters SELECT * FROM txguard_dead_letters;
