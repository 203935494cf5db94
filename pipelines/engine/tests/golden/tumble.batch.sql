SELECT user_id, to_timestamp_micros(ws) AS window_start, to_timestamp_micros(ws + 600000000) AS window_end,
       n, total, hi, big
FROM (
    SELECT user_id, (CAST(ts AS BIGINT) / 600000000) * 600000000 AS ws, COUNT(*) AS n,
           SUM(amount) AS total, MAX(amount) AS hi,
           SUM(CASE WHEN amount > 100 THEN 1 ELSE 0 END) AS big
    FROM transactions
    WHERE amount > 1
    GROUP BY user_id, ws
    HAVING COUNT(*) > 1
)
