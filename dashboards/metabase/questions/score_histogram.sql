-- name: Score distribution
-- description: Isolation-forest scores in buckets of 0.05; anomalies sit at the high end.
-- display: bar
-- visualization_settings: {"graph.dimensions": ["score_from"], "graph.metrics": ["transactions", "anomalies"]}
SELECT score_from, transactions, anomalies, labelled_fraud
FROM score_histogram
ORDER BY score_from
