-- name: Model quality
-- description: Per model version: transactions, flagged, and precision/recall against the is_fraud label.
-- display: table
-- visualization_settings: {}
SELECT model_version, transactions, flagged, labelled_fraud, true_positives,
       round(precision::numeric, 3) AS precision, round(recall::numeric, 3) AS recall
FROM model_quality
ORDER BY transactions DESC
