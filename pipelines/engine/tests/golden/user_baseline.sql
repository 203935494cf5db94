-- Per-user baselines: each row's score judged against the same user's own recent scores (the
-- hour before it), as well as against the model's threshold. The history excludes the row
-- itself: the frame's SUM and COUNT minus the row.
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    transaction_id TEXT, score DOUBLE, user_prev_n BIGINT, user_prev_mean DOUBLE,
    flagged BOOLEAN, flagged_for_user BOOLEAN
) WITH (connector = 'stdout');
CREATE VIEW f AS
SELECT transaction_id, user_id, ts, ln(1 + amount) AS a,
    CAST(COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS DOUBLE) AS b
FROM transactions;
CREATE VIEW scored AS
SELECT transaction_id, user_id, ts, iforest_score(a, b) AS score FROM f;
CREATE VIEW baseline AS
SELECT transaction_id, score,
    COUNT(score) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) - 1 AS user_prev_n,
    SUM(score) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) - score AS user_prev_sum
FROM scored;
INSERT INTO out
SELECT transaction_id, score, user_prev_n,
    CASE WHEN user_prev_n > 0 THEN user_prev_sum / user_prev_n END AS user_prev_mean,
    score > iforest_threshold() AS flagged,
    score > iforest_threshold()
        AND (user_prev_n < 3 OR score > user_prev_sum / user_prev_n + 0.05) AS flagged_for_user
FROM baseline;
