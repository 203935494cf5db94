-- name: Amounts by location and category
-- description: Volume, median and 95th-percentile amount, and anomaly rate per location and category.
-- display: table
-- visualization_settings: {}
SELECT location, category, transactions, round(median_amount::numeric, 2) AS median_amount,
       round(p95_amount::numeric, 2) AS p95_amount, round((anomaly_rate * 100)::numeric, 2) AS anomaly_pct
FROM amount_by_location_category
ORDER BY transactions DESC
LIMIT 50
