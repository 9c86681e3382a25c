-- RAW: payloads exactly as the data API delivered them, and their rows as text.

-- One row per delivered batch, written before anything else happens with it.
CREATE TABLE IF NOT EXISTS raw_batches (
    batch_key      text PRIMARY KEY,
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- landing order
    group_number   integer NOT NULL,
    day            text NOT NULL,
    batch_number   integer NOT NULL,
    fetched_at     timestamptz NOT NULL,
    source_url     text NOT NULL,
    row_count      integer NOT NULL,
    payload_hash   text NOT NULL,   -- sha256 of the HTTP response body
    body           bytea NOT NULL,  -- that body, byte for byte, stored as body_encoding says
    UNIQUE (group_number, day, batch_number)
);
ALTER TABLE raw_batches ALTER COLUMN body SET STORAGE EXTERNAL;  -- no TOAST compression
-- 'zstd' (a zstd frame: realty.ingest.landing writes 28 MB of JSON as 7 MB) or 'identity' (as is,
-- batches landed before 2026-11-23); realty.ingest.landing.stored_body reads both.
ALTER TABLE raw_batches ADD COLUMN IF NOT EXISTS body_encoding text NOT NULL DEFAULT 'identity';

-- The rows of each batch as delivered (text; typing happens in CLEAN), one partition per batch:
-- realty.ingest.landing creates it, COPYs the rows in and attaches it in the transaction that lands
-- the batch row. No index and no key: a batch is read whole, from its own partition, and
-- (batch_key, row_index) is unique by construction, as a batch's rows are only ever written
-- together (realty.ingest.landing, behind the batch's raw_batches row and lock). A primary key cost
-- half of the server's COPY time (0.6 of 1.2 s per 300k rows); a foreign key to raw_batches,
-- its per-row trigger, 3.5 s.
-- Until 2026-11-23 raw_listings was one table with a primary key: it becomes the default
-- partition, its rows staying where they are (a re-spread moves a batch to its own partition).
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('raw_listings')) = 'r' THEN
        ALTER TABLE raw_listings RENAME TO raw_listings_default;
        CREATE TABLE raw_listings (LIKE raw_listings_default) PARTITION BY LIST (batch_key);
        ALTER TABLE raw_listings ATTACH PARTITION raw_listings_default DEFAULT;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS raw_listings (
    batch_key      text NOT NULL,
    row_index      integer NOT NULL,
    brokered_by    text,
    status         text,
    price          text,
    bed            text,
    bath           text,
    acre_lot       text,
    street         text,
    city           text,
    state          text,
    zip_code       text,
    house_size     text,
    prev_sold_date text
) PARTITION BY LIST (batch_key);
-- Rows of no batch partition: those landed before partitions, or written by hand.
CREATE TABLE IF NOT EXISTS raw_listings_default PARTITION OF raw_listings DEFAULT;

-- Whether the source said it has delivered every batch of a group/day (its 400 answer).
CREATE TABLE IF NOT EXISTS source_progress (
    group_number  integer NOT NULL,
    day           text NOT NULL,
    exhausted_at  timestamptz,
    PRIMARY KEY (group_number, day)
);

-- Every call of GET /data, committed before its body is read (realty.ingest.archive): the answer's
-- status and body, or the transport error when there was none. A body whose batch landed is
-- dropped (raw_batches holds the same bytes, payload_hash says so); any other is kept as received.
CREATE TABLE IF NOT EXISTS source_responses (
    response_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_number   integer NOT NULL,   -- the stream asked for
    day            text NOT NULL,
    url            text NOT NULL,
    received_at    timestamptz NOT NULL,
    seconds        double precision NOT NULL,
    status_code    integer,            -- null: no answer (timeout, connection error)
    error          text,               -- why there was no answer
    body_bytes     integer NOT NULL,
    payload_hash   text NOT NULL,      -- sha256 of the body
    body           bytea,              -- zstd; null once raw_batches holds it
    -- null until the answer is read: landed, resent (landed before), quarantined (a 200 that is
    -- not a batch of the stream: reason says why), exhausted, refused (4xx), failed (no answer,
    -- 5xx, 429: called again)
    outcome        text,
    reason         text,
    batch_key      text                -- the batch it delivered (landed or resent)
);
CREATE INDEX IF NOT EXISTS source_responses_stream
    ON source_responses (group_number, day, response_id);

-- Batch numbers a stream skipped: found when a batch arrives with a number above the next one
-- expected (a failed call the source had counted, a quarantined answer). A gap stays recorded;
-- it is open while any of its batches is not landed (a restart of the source can fill it).
CREATE TABLE IF NOT EXISTS source_gaps (
    group_number   integer NOT NULL,
    day            text NOT NULL,
    first_batch    integer NOT NULL,
    last_batch     integer NOT NULL,
    found_at       timestamptz NOT NULL,
    response_id    bigint NOT NULL,    -- the answer whose batch number showed the gap
    reason         text NOT NULL,
    PRIMARY KEY (group_number, day, first_batch)
);

-- Every answered inference (serving/inference_log.py): one row per prediction, so a price
-- request with n listings writes items 0..n-1; vision and digits requests write item 0 with
-- their metadata in details (never the image). Written in batches by a background writer; the
-- primary key is what makes replaying its spool idempotent (ON CONFLICT DO NOTHING).
CREATE TABLE IF NOT EXISTS inference_log (
    request_id     text NOT NULL,
    item           integer NOT NULL,
    logged_at      timestamptz NOT NULL,
    route          text NOT NULL,
    model_name     text,
    model_version  text,
    latency_ms     double precision NOT NULL,
    listing        jsonb,            -- the listing fields as received (price routes)
    prediction     double precision,
    details        jsonb,            -- counts, labels, predicted class (vision, digits)
    PRIMARY KEY (request_id, item)
);
CREATE INDEX IF NOT EXISTS inference_log_logged_at ON inference_log (logged_at);
-- The price's conformal interval (level, bounds in dollars); null where there is none.
ALTER TABLE inference_log
    ADD COLUMN IF NOT EXISTS interval_level double precision,
    ADD COLUMN IF NOT EXISTS interval_low double precision,
    ADD COLUMN IF NOT EXISTS interval_high double precision;
-- Who answered (realty.model.rollout): production or canary answered the client, shadow scored
-- the same item unseen. The key gains the role, so a shadow row pairs with its answered row.
ALTER TABLE inference_log ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'production';
DO $$
BEGIN
    IF (SELECT array_length(conkey, 1) FROM pg_constraint
        WHERE conname = 'inference_log_pkey') = 2 THEN
        ALTER TABLE inference_log DROP CONSTRAINT inference_log_pkey;
        ALTER TABLE inference_log ADD PRIMARY KEY (request_id, item, role);
    END IF;
END $$;
-- A price listing's identity (realty.schema.listing_identity), written by serving: the late
-- labels of realty/labels.py find a listing's predictions by it.
ALTER TABLE inference_log ADD COLUMN IF NOT EXISTS listing_key text;
CREATE INDEX IF NOT EXISTS inference_log_listing_key ON inference_log (listing_key)
    WHERE listing_key IS NOT NULL;
