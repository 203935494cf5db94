WITH g AS (
    SELECT user_id, amount, CAST(ts AS BIGINT) AS tu,
           CASE WHEN CAST(ts AS BIGINT) - LAG(CAST(ts AS BIGINT)) OVER (PARTITION BY user_id ORDER BY ts) < 1200000000
                THEN 0 ELSE 1 END AS brk
    FROM transactions
), s AS (
    SELECT user_id, amount, tu,
           SUM(brk) OVER (PARTITION BY user_id ORDER BY tu ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid
    FROM g
)
SELECT user_id, to_timestamp_micros(MIN(tu)) AS window_start, to_timestamp_micros(MAX(tu) + 1200000000) AS window_end,
       COUNT(*) AS n, SUM(amount) AS total
FROM s GROUP BY user_id, sid
