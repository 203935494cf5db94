-- LAG: the user's previous amount and the time since the previous transaction, computed in
-- a view and derived on in the insert.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL, lat DOUBLE, lon DOUBLE,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    transaction_id TEXT, prev_amount DOUBLE, seconds_since_prev DOUBLE, moved BOOLEAN
) WITH (connector = 'stdout');
CREATE VIEW prev AS
SELECT transaction_id, amount, ts, lat,
    LAG(amount) OVER (PARTITION BY user_id ORDER BY ts) AS prev_amount,
    LAG(CAST(ts AS BIGINT)) OVER (PARTITION BY user_id ORDER BY ts) AS prev_us,
    LAG(lat, 1) OVER (PARTITION BY user_id ORDER BY ts) AS prev_lat
FROM transactions;
INSERT INTO out
SELECT transaction_id, prev_amount, (CAST(ts AS BIGINT) - prev_us) / 1e6,
       CASE WHEN prev_lat IS NULL THEN NULL ELSE abs(lat - prev_lat) > 1 END
FROM prev;
