-- name: Anomalies per minute
-- description: Scored transactions and flagged anomalies per minute of event time (last 3 hours of data).
-- display: line
-- visualization_settings: {"graph.dimensions": ["minute"], "graph.metrics": ["transactions", "anomalies", "labelled_fraud"]}
SELECT minute, transactions, anomalies, labelled_fraud
FROM anomalies_per_minute
WHERE minute > (SELECT max(minute) FROM anomalies_per_minute) - interval '3 hours'
ORDER BY minute
