-- name: Top risky users
-- description: Users with the most anomalies, with their highest score and amounts.
-- display: table
-- visualization_settings: {}
SELECT user_id, anomalies, transactions, round(max_score::numeric, 3) AS max_score,
       round(anomalous_amount::numeric, 2) AS anomalous_amount, last_seen
FROM top_risky_users
ORDER BY anomalies DESC, max_score DESC
LIMIT 25
