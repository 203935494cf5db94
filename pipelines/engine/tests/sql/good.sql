-- A pipeline in Arroyo's dialect: a generated source, a feature view, two sinks.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    merchant TEXT,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    connector = 'generator',
    users = 1000,
    'fraud_rate' = 0.01
);

CREATE TABLE scored (
    transaction_id TEXT NOT NULL,
    user_id TEXT,
    amount DOUBLE,
    count_1h BIGINT,
    score DOUBLE
) WITH (connector = 'collect');

CREATE TABLE per_minute (
    user_id TEXT,
    window_start TIMESTAMP,
    n BIGINT,
    total DOUBLE
) WITH (connector = 'collect', type = 'sink');

CREATE VIEW features AS
SELECT transaction_id, user_id, amount,
       COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
                      RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS count_1h,
       ln(1 + amount) AS log_amount
FROM transactions;

INSERT INTO scored
SELECT transaction_id, user_id, amount, count_1h, iforest_score(log_amount, count_1h) FROM features;

INSERT INTO per_minute
SELECT user_id, window.start, n, total FROM (
    SELECT user_id, tumble(INTERVAL '1' MINUTE) AS window, COUNT(*) AS n, SUM(amount) AS total
    FROM transactions GROUP BY user_id, window
);
