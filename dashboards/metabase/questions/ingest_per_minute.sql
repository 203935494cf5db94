-- name: Rows written per minute
-- description: Rows the pipeline wrote per minute, and how far event time trailed the write.
-- display: line
-- visualization_settings: {"graph.dimensions": ["minute"], "graph.metrics": ["rows_written"]}
SELECT minute, rows_written, round(mean_lag_seconds::numeric, 1) AS mean_lag_seconds
FROM ingest_per_minute
WHERE minute > now() - interval '3 hours'
ORDER BY minute
