-- TUMBLE: per user per 10 minutes, with a filter before and a HAVING after the aggregate.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    user_id TEXT, window_start TIMESTAMP, window_end TIMESTAMP, n BIGINT, total DOUBLE,
    hi DOUBLE, big BIGINT
) WITH (connector = 'stdout');
INSERT INTO out
SELECT user_id, window.start, window.end, n, total, hi, big FROM (
    SELECT user_id, TUMBLE(INTERVAL '10' MINUTE) AS window, COUNT(*) AS n,
           SUM(amount) AS total, MAX(amount) AS hi,
           SUM(CASE WHEN amount > 100 THEN 1 ELSE 0 END) AS big
    FROM transactions
    WHERE amount > 1
    GROUP BY user_id, window
    HAVING COUNT(*) > 1
);
