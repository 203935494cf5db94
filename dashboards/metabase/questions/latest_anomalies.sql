-- name: Latest anomalies
-- description: The most recent transactions the model flagged.
-- display: table
-- visualization_settings: {}
SELECT ts, user_id, amount, merchant, category, location, round(score::numeric, 3) AS score, is_fraud
FROM anomalies
ORDER BY ts DESC
LIMIT 50
