-- txguard's Postgres tables for the default pipeline (sql/pipeline_postgres.sql). Idempotent:
-- `txguard db init` runs this file and views.sql; `psql -f` works too.
--
-- Keys make delivery idempotent: the postgres sink upserts on a table's primary key, so a
-- transaction written twice (a replayed source, a retried batch) stays one row. Tables whose
-- key the pipeline does not write (dead_letters) are appended to. `inserted_at` is filled by
-- the database and measures how fresh the data is (`txguard db stats`).

CREATE TABLE IF NOT EXISTS transactions_scored (
    transaction_id     text COLLATE "C" PRIMARY KEY,
    user_id            text NOT NULL,
    ts                 timestamptz NOT NULL,
    amount             double precision NOT NULL,
    merchant           text,
    category           text,
    location           text,
    channel            text,
    fraud_pattern      text,
    is_fraud           boolean,
    log_amount         double precision,
    tx_count_10m       bigint,
    tx_count_1h        bigint,
    tx_count_24h       bigint,
    amount_mean_24h    double precision,
    amount_std_24h     double precision,
    amount_zscore      double precision,
    amount_to_mean     double precision,
    seconds_since_prev double precision,
    km_from_prev       double precision,
    speed_kmh          double precision,
    hour_of_day        double precision,
    risky_category     double precision,
    small_amounts_1h   double precision,
    score              double precision,
    is_anomaly         boolean,
    model_version      text,
    inserted_at        timestamptz NOT NULL DEFAULT now()
);
-- Databases made before the generator labelled its fraud patterns.
ALTER TABLE transactions_scored ADD COLUMN IF NOT EXISTS fraud_pattern text;
-- Time ranges: rows arrive in event-time order, so BRIN indexes are tiny and cheap to keep.
CREATE INDEX IF NOT EXISTS transactions_scored_ts ON transactions_scored USING brin (ts);
CREATE INDEX IF NOT EXISTS transactions_scored_inserted_at
    ON transactions_scored USING brin (inserted_at);
-- No per-user index here on purpose: at the default pipeline's rate a B-tree on
-- (user_id, ts) costs a third of the sink's throughput (208k -> 133k rows/s measured,
-- docs/benchmarks.md). Per-user questions go to `anomalies`, which has one. An application
-- that looks up one user's full history can add it:
--   CREATE INDEX CONCURRENTLY transactions_scored_user_ts ON transactions_scored (user_id, ts);

CREATE TABLE IF NOT EXISTS anomalies (
    transaction_id text COLLATE "C" PRIMARY KEY,
    user_id        text COLLATE "C" NOT NULL,
    ts             timestamptz NOT NULL,
    amount         double precision NOT NULL,
    merchant       text,
    category       text,
    location       text,
    score          double precision,
    is_fraud       boolean,
    model_version  text,
    explanation    jsonb,
    inserted_at    timestamptz NOT NULL DEFAULT now()
);
-- Databases initialised before explanations existed get the column too.
ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS explanation jsonb;
CREATE INDEX IF NOT EXISTS anomalies_ts ON anomalies (ts);
CREATE INDEX IF NOT EXISTS anomalies_user_ts ON anomalies (user_id, ts);

CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    position    text NOT NULL,
    reason      text NOT NULL,
    raw         text NOT NULL,
    received_at timestamptz NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at);

CREATE TABLE IF NOT EXISTS user_window_stats (
    user_id      text COLLATE "C" NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    tx_count     bigint NOT NULL,
    amount_sum   double precision,
    amount_max   double precision,
    anomalies    bigint,
    inserted_at  timestamptz NOT NULL DEFAULT now(),
    -- Windows close in time order, so a time-leading key is appended at its right edge.
    PRIMARY KEY (window_start, user_id)
);
-- No per-user index by default either: it costs ~15% of the whole Postgres pipeline's
-- throughput (229k -> 195k tx/s measured, docs/benchmarks.md), and no view or dashboard here
-- needs it. An application that reads one user's windows can add it:
--   CREATE INDEX CONCURRENTLY user_window_stats_user ON user_window_stats (user_id, window_start);

-- Champion / challenger (sql/examples/champion_challenger.sql): every row's verdicts from two
-- models scored side by side, upserted on the transaction id.
CREATE TABLE IF NOT EXISTS shadow_scores (
    transaction_id     text COLLATE "C" PRIMARY KEY,
    user_id            text NOT NULL,
    ts                 timestamptz NOT NULL,
    amount             double precision NOT NULL,
    is_fraud           boolean,
    champion_version   text NOT NULL,
    champion_score     double precision,
    champion_flag      boolean,
    challenger_version text NOT NULL,
    challenger_score   double precision,
    challenger_flag    boolean,
    inserted_at        timestamptz NOT NULL DEFAULT now()
);
