-- HOP: 30-minute windows every 10 minutes, over all users (no key column).
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    window_start TIMESTAMP, n BIGINT, lo DOUBLE, mean DOUBLE
) WITH (connector = 'stdout');
INSERT INTO out
SELECT window.start, n, lo, mean FROM (
    SELECT HOP(INTERVAL '10' MINUTE, INTERVAL '30' MINUTE) AS window, COUNT(*) AS n,
           MIN(amount) AS lo, AVG(amount) AS mean
    FROM transactions
    GROUP BY window
);
