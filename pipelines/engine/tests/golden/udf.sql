-- The forest UDFs on per-event features: score, flag and model version, with the anomalies
-- alone in a second sink.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    transaction_id TEXT, score DOUBLE, flagged BOOLEAN, version TEXT
) WITH (connector = 'stdout');
CREATE VIEW f AS
SELECT transaction_id, ln(1 + amount) AS a,
    CAST(COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS DOUBLE) AS b
FROM transactions;
INSERT INTO out
SELECT transaction_id, iforest_score(a, b), iforest_is_anomaly(a, b), iforest_model_version()
FROM f;
