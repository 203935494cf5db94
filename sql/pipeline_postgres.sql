-- txguard's default pipeline writing to PostgreSQL: the same generator, features, model and
-- queries as sql/pipeline.sql (a test keeps them identical), with the four sinks in Postgres
-- tables that `txguard db init` creates (sql/postgres/). Scored transactions, anomalies and
-- window stats are upserted on their primary keys, so re-delivered rows never duplicate.
--
--   txguard db init
--   txguard run sql/pipeline_postgres.sql
--
-- The connection comes from $TXGUARD_POSTGRES (default host=127.0.0.1 user=postgres
-- dbname=postgres), or per table: --set transactions_scored.connection='postgres://…'.

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
    count = 1000000,
    fraud_rate = 0.002,
    out_of_order = 0.01,
    max_delay_ms = 3000
);

CREATE TABLE transactions_scored (
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    ts TIMESTAMP NOT NULL,
    amount DOUBLE NOT NULL,
    merchant TEXT,
    category TEXT,
    location TEXT,
    channel TEXT,
    fraud_pattern TEXT,
    is_fraud BOOLEAN,
    log_amount DOUBLE,
    tx_count_10m BIGINT,
    tx_count_1h BIGINT,
    tx_count_24h BIGINT,
    amount_mean_24h DOUBLE,
    amount_std_24h DOUBLE,
    amount_zscore DOUBLE,
    amount_to_mean DOUBLE,
    seconds_since_prev DOUBLE,
    km_from_prev DOUBLE,
    speed_kmh DOUBLE,
    hour_of_day DOUBLE,
    risky_category DOUBLE,
    small_amounts_1h DOUBLE,
    score DOUBLE,
    is_anomaly BOOLEAN,
    model_version TEXT
) WITH (connector = 'postgres', table = 'transactions_scored');

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

CREATE TABLE user_window_stats (
    user_id TEXT NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    tx_count BIGINT NOT NULL,
    amount_sum DOUBLE,
    amount_max DOUBLE,
    anomalies BIGINT
) WITH (connector = 'postgres', table = 'user_window_stats');

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

-- Score once; `score > iforest_threshold()` is exactly iforest_is_anomaly(...) without scoring
-- the row a second time.
CREATE VIEW scored AS
SELECT *, score > iforest_threshold() AS is_anomaly, iforest_model_version() AS model_version
FROM (
    SELECT *,
        iforest_score(log_amount, tx_count_10m, tx_count_1h, tx_count_24h, amount_mean_24h,
            amount_std_24h, amount_zscore, amount_to_mean, seconds_since_prev, km_from_prev,
            speed_kmh, hour_of_day, risky_category, small_amounts_1h) AS score
    FROM features
);

INSERT INTO transactions_scored SELECT * FROM scored;

-- Each anomaly says why: its features' exact TreeSHAP contributions to its path length, most
-- anomalous first (JSON; see the README's SQL reference). An explanation costs far more than a
-- score (docs/benchmarks.md), so only flagged rows get one (NULL otherwise). This is the last
-- view, so it is also what POST /api/v1/score answers with.
CREATE VIEW explained AS
SELECT *,
    CASE WHEN is_anomaly THEN
        iforest_explain(log_amount, tx_count_10m, tx_count_1h, tx_count_24h, amount_mean_24h,
            amount_std_24h, amount_zscore, amount_to_mean, seconds_since_prev, km_from_prev,
            speed_kmh, hour_of_day, risky_category, small_amounts_1h)
    END AS explanation
FROM scored;

INSERT INTO anomalies
SELECT transaction_id, user_id, ts, amount, merchant, category, location, score, is_fraud,
       model_version, explanation
FROM explained
WHERE is_anomaly;

INSERT INTO dead_letters SELECT * FROM txguard_dead_letters;

INSERT INTO user_window_stats
SELECT user_id, window.start, window.end, tx_count, amount_sum, amount_max, anomalies FROM (
    SELECT user_id, TUMBLE(INTERVAL '1' MINUTE) AS window,
           COUNT(*) AS tx_count, SUM(amount) AS amount_sum, MAX(amount) AS amount_max,
           SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomalies
    FROM scored
    GROUP BY user_id, window
);
