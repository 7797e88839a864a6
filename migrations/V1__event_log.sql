-- The event log: the source of truth of a store shared by Arbor replicas. One row per
-- event, the `arbor.v1.Event` protobuf as stored; `seq` is gap-free and strictly
-- increasing (writers append under a transaction-scoped advisory lock).
CREATE TABLE arbor_log (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    event bytea NOT NULL
);

-- Facts about the store: `store_id` names it, so that a replica's local cache knows
-- which log it is a copy of.
CREATE TABLE arbor_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO arbor_meta (key, value) VALUES ('store_id', gen_random_uuid()::text);
