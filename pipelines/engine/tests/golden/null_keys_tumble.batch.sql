SELECT k, to_timestamp_micros(ws) AS window_start, to_timestamp_micros(ws + 600000000) AS window_end,
       n, total
FROM (
    SELECT k, (CAST(ts AS BIGINT) / 600000000) * 600000000 AS ws, COUNT(*) AS n,
           SUM(amount) AS total
    FROM (
        SELECT amount, ts,
            CASE WHEN amount < 20 THEN NULL WHEN amount < 45 THEN '' ELSE user_id END AS k
        FROM transactions
    )
    GROUP BY k, ws
)
