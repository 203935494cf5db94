-- A NULL partition key is its own partition, apart from the empty string's (as in SQL): the
-- key is NULL for small amounts, '' for middling ones, the user otherwise.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    transaction_id TEXT, k TEXT, amount DOUBLE, n_1h BIGINT, sum_1h DOUBLE, max_1h DOUBLE,
    std_1h DOUBLE, prev DOUBLE
) WITH (connector = 'stdout');
CREATE VIEW keyed AS
SELECT transaction_id, amount, ts,
    CASE WHEN amount < 20 THEN NULL WHEN amount < 45 THEN '' ELSE user_id END AS k
FROM transactions;
INSERT INTO out
SELECT transaction_id, k, amount,
    COUNT(*) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
    SUM(amount) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
    MAX(amount) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
    STDDEV(amount) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW),
    LAG(amount) OVER (PARTITION BY k ORDER BY ts)
FROM keyed;
