SELECT to_timestamp_micros(ws) AS window_start, COUNT(*) AS n, MIN(amount) AS lo, AVG(amount) AS mean
FROM (
    SELECT amount, (CAST(ts AS BIGINT) / 600000000) * 600000000 - k * 600000000 AS ws
    FROM transactions CROSS JOIN (VALUES (0), (1), (2)) AS ks(k)
)
GROUP BY ws
