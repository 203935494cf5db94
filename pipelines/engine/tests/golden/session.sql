-- SESSION: a user's activity until 20 minutes pass without a transaction.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    user_id TEXT, window_start TIMESTAMP, window_end TIMESTAMP, n BIGINT, total DOUBLE
) WITH (connector = 'stdout');
INSERT INTO out
SELECT user_id, window.start, window.end, n, total FROM (
    SELECT user_id, SESSION(INTERVAL '20' MINUTE) AS window, COUNT(*) AS n, SUM(amount) AS total
    FROM transactions
    GROUP BY user_id, window
);
