-- CLEAN: typed, validated listings, the rows rejected on the way and per-batch accounts.

CREATE TABLE IF NOT EXISTS clean_batches (
    batch_key          text PRIMARY KEY,
    seq                bigint NOT NULL,  -- raw_batches.seq: landing order
    group_number       integer NOT NULL,
    day                text NOT NULL,
    batch_number       integer NOT NULL,
    raw_rows           integer NOT NULL,
    clean_rows         integer NOT NULL,
    rejected_rows      integer NOT NULL,
    rejects_by_reason  jsonb NOT NULL,
    null_fractions     jsonb NOT NULL,
    cleaned_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (raw_rows = clean_rows + rejected_rows)
);

-- Listings and rejects have no foreign key to clean_batches (a per-row trigger, seconds per
-- 300k rows); realty.store.clean replaces a batch's three parts in one transaction.
CREATE TABLE IF NOT EXISTS clean_listings (
    batch_key      text NOT NULL,
    row_index      integer NOT NULL,
    brokered_by    bigint,
    status         text NOT NULL,
    price          double precision NOT NULL,
    bed            smallint,
    bath           smallint,
    acre_lot       double precision,
    street         bigint,
    city           text NOT NULL,
    state          text NOT NULL,
    zip_code       text,
    house_size     double precision,
    prev_sold_date date,
    row_hash       text NOT NULL,
    PRIMARY KEY (batch_key, row_index)
);
-- A listing lands in CLEAN once, whichever batch delivered it first.
CREATE UNIQUE INDEX IF NOT EXISTS clean_listings_row_hash ON clean_listings (row_hash);

CREATE TABLE IF NOT EXISTS rejected_listings (
    batch_key  text NOT NULL,
    row_index  integer NOT NULL,
    reason     text NOT NULL,
    detail     text NOT NULL,
    PRIMARY KEY (batch_key, row_index)
);
CREATE INDEX IF NOT EXISTS rejected_listings_reason ON rejected_listings (batch_key, reason);

-- The learning loop: one drift verdict per batch, the training sets and decisions it caused,
-- and the production model's predictions for each batch's listings.
CREATE TABLE IF NOT EXISTS drift_reports (
    batch_key           text PRIMARY KEY,
    production_version  text,              -- compared against; null: no production model yet
    retrain             boolean NOT NULL,
    reasons             jsonb NOT NULL,    -- human-readable, most severe first
    report              jsonb NOT NULL,    -- realty.drift.DriftReport.to_dict()
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS training_snapshots (
    snapshot_hash     text PRIMARY KEY,   -- sha256 over the sorted row hashes
    batch_keys        jsonb NOT NULL,
    newest_batch_key  text NOT NULL,
    row_count         bigint NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS model_decisions (
    batch_key           text PRIMARY KEY,  -- the partition whose data trained the candidate
    trigger             text NOT NULL,     -- initial | drift | stale | manual
    reasons             jsonb NOT NULL,
    snapshot_hash       text NOT NULL,
    mlflow_run_id       text NOT NULL,
    candidate_version   text NOT NULL,
    candidate_metrics   jsonb NOT NULL,
    promoted            boolean,           -- null until the gate has decided
    decision_reason     text,
    production_version  text,              -- after the gate
    production_metrics  jsonb,             -- production's scores on the shared evaluation data
    decided_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS batch_predictions (
    batch_key        text NOT NULL,
    row_index        integer NOT NULL,
    predicted_price  double precision NOT NULL,
    model_name       text NOT NULL,
    model_version    text NOT NULL,
    predicted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_key, row_index)
);

-- Every move of a model's aliases and rollout state (realty/model/rollout.py), in order: who
-- or what decided, why, the state before and after, the live figures then. A move is written
-- here before MLflow is touched and marked applied after: a row with applied_at null is a move
-- a crash interrupted, which the next move (or `realty rollout status`) completes first.
CREATE TABLE IF NOT EXISTS rollout_events (
    event_id     bigserial PRIMARY KEY,
    model_name   text NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz,
    action       text NOT NULL,    -- start | step | promote | rollback | pause | resume
    actor        text NOT NULL,    -- gate | controller | cli | dagster
    reason       text NOT NULL,
    before       jsonb NOT NULL,   -- RolloutState.as_json()
    after        jsonb NOT NULL,
    metrics      jsonb
);
CREATE INDEX IF NOT EXISTS rollout_events_model ON rollout_events (model_name, event_id);

-- What was served, per hourly window and model version (realty/served.py): the served_traffic
-- asset rewrites a window's rows in one transaction, so re-running it never duplicates.
CREATE TABLE IF NOT EXISTS served_windows (
    window_start   timestamptz NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    profile        jsonb NOT NULL,   -- ServedProfile.to_dict()
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, model_name, model_version)
);

-- Asset checks as alerts (realty/alerts.py): the last verdict of every check and partition,
-- and one alert each time a check starts failing (firing) or passes again (resolved).
CREATE TABLE IF NOT EXISTS check_states (
    asset          text NOT NULL,
    check_name     text NOT NULL,
    partition      text NOT NULL,    -- '' for an unpartitioned check
    failing        boolean NOT NULL,
    record_id      bigint NOT NULL,  -- Dagster's id of the evaluation that set it
    PRIMARY KEY (asset, check_name, partition)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id       bigserial PRIMARY KEY,
    record_id      bigint NOT NULL UNIQUE,  -- the evaluation it reports: a re-read adds nothing
    raised_at      timestamptz NOT NULL,
    state          text NOT NULL CHECK (state IN ('firing', 'resolved')),
    asset          text NOT NULL,
    check_name     text NOT NULL,
    partition      text NOT NULL,
    severity       text NOT NULL,
    description    text,
    run_id         text NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    delivered_at   timestamptz,
    last_error     text
);
CREATE INDEX IF NOT EXISTS alerts_undelivered ON alerts (alert_id) WHERE delivered_at IS NULL;

-- Late labels (realty/labels.py): a logged price prediction joined to the sale of the same
-- listing in a later batch. One row per prediction (its key is the inference log's); the
-- batch that first brought the sale labels it.
CREATE TABLE IF NOT EXISTS price_labels (
    request_id     text NOT NULL,
    item           integer NOT NULL,
    role           text NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    predicted_at   timestamptz NOT NULL,
    prediction     double precision NOT NULL,
    interval_level double precision,
    interval_low   double precision,
    interval_high  double precision,
    listing_key    text NOT NULL,
    state          text NOT NULL,
    label_batch    text NOT NULL,
    label_kind     text NOT NULL CHECK (label_kind IN ('sale', 'relisting')),
    realized_price double precision NOT NULL,
    labelled_at    timestamptz NOT NULL,  -- when the batch with the label landed
    PRIMARY KEY (request_id, item, role)
);
CREATE INDEX IF NOT EXISTS price_labels_batch ON price_labels (label_batch);
CREATE INDEX IF NOT EXISTS price_labels_version ON price_labels (model_name, model_version);
-- What the labels of each batch say of each version and role (realized_performance asset).
CREATE TABLE IF NOT EXISTS realized_performance (
    batch_key      text NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    role           text NOT NULL,
    figures        jsonb NOT NULL,
    PRIMARY KEY (batch_key, model_name, model_version, role)
);
-- Production's error on each batch before it trained on it (drift_report): the residuals that
-- calibrate the next candidates' price intervals (realty/model/intervals.py).
CREATE TABLE IF NOT EXISTS unseen_residuals (
    batch_key      text NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    states         text[] NOT NULL,  -- the interval group of each listing
    residuals      real[] NOT NULL,  -- |log price - log predicted|, one per listing
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_key, model_name)
);
