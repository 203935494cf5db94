-- Per-transaction features and per-user minute statistics from the built-in generator,
-- printed to standard output. Check it with: txguard validate sql/examples/features_to_stdout.sql
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    category TEXT,
    lat DOUBLE,
    lon DOUBLE,
    is_fraud BOOLEAN,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    connector = 'generator',
    users = 10000,
    fraud_rate = 0.002
);

CREATE TABLE features_out (
    transaction_id TEXT,
    user_id TEXT,
    amount DOUBLE,
    log_amount DOUBLE,
    count_1h BIGINT,
    mean_24h DOUBLE,
    std_24h DOUBLE,
    prev_amount DOUBLE
) WITH (connector = 'stdout', format = 'json');

CREATE TABLE user_minute (
    user_id TEXT,
    window_start TIMESTAMP,
    window_end TIMESTAMP,
    n BIGINT,
    total DOUBLE,
    max_amount DOUBLE
) WITH (connector = 'stdout', format = 'table');

CREATE VIEW features AS
SELECT
    transaction_id,
    user_id,
    amount,
    ln(1 + amount) AS log_amount,
    COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS count_1h,
    AVG(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS mean_24h,
    STDDEV(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '24' HOUR PRECEDING AND CURRENT ROW) AS std_24h,
    LAG(amount) OVER (PARTITION BY user_id ORDER BY ts) AS prev_amount
FROM transactions;

INSERT INTO features_out SELECT * FROM features;

INSERT INTO user_minute
SELECT user_id, window.start, window.end, n, total, max_amount FROM (
    SELECT user_id, TUMBLE(INTERVAL '1' MINUTE) AS window,
           COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS max_amount
    FROM transactions
    GROUP BY user_id, window
);
