-- Views for dashboards (dashboards/metabase/ charts them). `txguard db init` (re)creates
-- them; every one answers on empty tables.

-- Transactions, anomalies and labelled fraud per minute of event time.
CREATE OR REPLACE VIEW anomalies_per_minute AS
SELECT date_trunc('minute', ts) AS minute,
       count(*) AS transactions,
       count(*) FILTER (WHERE is_anomaly) AS anomalies,
       count(*) FILTER (WHERE is_fraud) AS labelled_fraud,
       (count(*) FILTER (WHERE is_anomaly))::double precision / count(*) AS anomaly_rate
FROM transactions_scored
GROUP BY 1;

-- Users with at least one anomaly, with how much and how risky.
CREATE OR REPLACE VIEW top_risky_users AS
SELECT user_id,
       count(*) AS transactions,
       count(*) FILTER (WHERE is_anomaly) AS anomalies,
       max(score) AS max_score,
       avg(score) AS mean_score,
       sum(amount) AS total_amount,
       sum(amount) FILTER (WHERE is_anomaly) AS anomalous_amount,
       max(ts) AS last_seen
FROM transactions_scored
GROUP BY user_id
HAVING count(*) FILTER (WHERE is_anomaly) > 0;

-- Amounts by location and category: volume, spread and anomaly rate.
CREATE OR REPLACE VIEW amount_by_location_category AS
SELECT coalesce(location, '(unknown)') AS location,
       coalesce(category, '(unknown)') AS category,
       count(*) AS transactions,
       avg(amount) AS mean_amount,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) AS median_amount,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY amount) AS p95_amount,
       (count(*) FILTER (WHERE is_anomaly))::double precision / count(*) AS anomaly_rate
FROM transactions_scored
GROUP BY 1, 2;

-- The model's scores in 20 buckets of width 0.05, with anomalies and labelled fraud.
CREATE OR REPLACE VIEW score_histogram AS
SELECT least(width_bucket(score, 0, 1, 20), 20) AS bucket,
       (least(width_bucket(score, 0, 1, 20), 20) - 1) * 0.05 AS score_from,
       least(width_bucket(score, 0, 1, 20), 20) * 0.05 AS score_to,
       count(*) AS transactions,
       count(*) FILTER (WHERE is_anomaly) AS anomalies,
       count(*) FILTER (WHERE is_fraud) AS labelled_fraud
FROM transactions_scored
WHERE score IS NOT NULL
GROUP BY 1;

-- Per model version: how many flagged, and precision/recall against the `is_fraud` label
-- where the source has one (the generator does).
CREATE OR REPLACE VIEW model_quality AS
SELECT model_version,
       count(*) AS transactions,
       count(*) FILTER (WHERE is_anomaly) AS flagged,
       count(*) FILTER (WHERE is_fraud) AS labelled_fraud,
       count(*) FILTER (WHERE is_anomaly AND is_fraud) AS true_positives,
       (count(*) FILTER (WHERE is_anomaly AND is_fraud))::double precision
           / nullif(count(*) FILTER (WHERE is_anomaly), 0) AS precision,
       (count(*) FILTER (WHERE is_anomaly AND is_fraud))::double precision
           / nullif(count(*) FILTER (WHERE is_fraud), 0) AS recall
FROM transactions_scored
GROUP BY model_version;

-- Rejected input by reason.
CREATE OR REPLACE VIEW dead_letters_by_reason AS
SELECT source, reason, count(*) AS messages, max(received_at) AS last_received
FROM dead_letters
GROUP BY source, reason;

-- Rows written per minute of arrival, and how far event time trailed arrival.
CREATE OR REPLACE VIEW ingest_per_minute AS
SELECT date_trunc('minute', inserted_at) AS minute,
       count(*) AS rows_written,
       avg(extract(epoch FROM inserted_at - ts)) AS mean_lag_seconds
FROM transactions_scored
GROUP BY 1;

-- Champion / challenger, per pair of versions: how often the two models agree on a row, what
-- each flags alone, and precision / recall against the is_fraud label (over the rows that have
-- one; NULL where nothing was flagged or nothing is labelled fraud).
CREATE OR REPLACE VIEW champion_challenger AS
SELECT champion_version,
       challenger_version,
       count(*) AS transactions,
       (count(*) FILTER (WHERE champion_flag IS NOT DISTINCT FROM challenger_flag))::double precision
           / count(*) AS agreement,
       count(*) FILTER (WHERE champion_flag AND challenger_flag) AS both_flagged,
       count(*) FILTER (WHERE champion_flag AND NOT challenger_flag) AS champion_only,
       count(*) FILTER (WHERE challenger_flag AND NOT champion_flag) AS challenger_only,
       count(*) FILTER (WHERE is_fraud IS NOT NULL) AS labelled,
       count(*) FILTER (WHERE is_fraud) AS labelled_fraud,
       (count(*) FILTER (WHERE champion_flag AND is_fraud))::double precision
           / NULLIF(count(*) FILTER (WHERE champion_flag AND is_fraud IS NOT NULL), 0) AS champion_precision,
       (count(*) FILTER (WHERE champion_flag AND is_fraud))::double precision
           / NULLIF(count(*) FILTER (WHERE is_fraud), 0) AS champion_recall,
       (count(*) FILTER (WHERE challenger_flag AND is_fraud))::double precision
           / NULLIF(count(*) FILTER (WHERE challenger_flag AND is_fraud IS NOT NULL), 0) AS challenger_precision,
       (count(*) FILTER (WHERE challenger_flag AND is_fraud))::double precision
           / NULLIF(count(*) FILTER (WHERE is_fraud), 0) AS challenger_recall
FROM shadow_scores
GROUP BY champion_version, challenger_version;

-- Recall per fraud pattern, per model version: which kinds of fraud each model catches (the
-- generator labels each fraud's pattern; rows without one are not counted).
CREATE OR REPLACE VIEW recall_by_pattern AS
SELECT model_version,
       fraud_pattern,
       count(*) AS frauds,
       count(*) FILTER (WHERE is_anomaly) AS flagged,
       (count(*) FILTER (WHERE is_anomaly))::double precision / count(*) AS recall
FROM transactions_scored
WHERE fraud_pattern IS NOT NULL
GROUP BY model_version, fraud_pattern;
