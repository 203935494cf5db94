-- TUMBLE with a NULL group key: the NULL group is its own, apart from the empty string's.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    k TEXT, window_start TIMESTAMP, window_end TIMESTAMP, n BIGINT, total DOUBLE
) WITH (connector = 'stdout');
CREATE VIEW keyed AS
SELECT amount, ts,
    CASE WHEN amount < 20 THEN NULL WHEN amount < 45 THEN '' ELSE user_id END AS k
FROM transactions;
INSERT INTO out
SELECT k, window.start, window.end, n, total FROM (
    SELECT k, TUMBLE(INTERVAL '10' MINUTE) AS window, COUNT(*) AS n, SUM(amount) AS total
    FROM keyed
    GROUP BY k, window
);
