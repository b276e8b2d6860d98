-- Federation (docs/federation.md): cluster instances send signed daily aggregates of
-- their enterprises to the provincial instance; never device-level telemetry.

-- On the provincial instance: the instances that may report, with the public key
-- they sign with and the regions and clusters they may report for.
CREATE TABLE federation_peer (
    instance_id   text PRIMARY KEY CHECK (instance_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name          text NOT NULL DEFAULT '',
    public_key    bytea NOT NULL CHECK (length(public_key) = 32),  -- Ed25519, raw
    regions       text[] NOT NULL DEFAULT '{}',
    clusters      text[] NOT NULL DEFAULT '{}',
    registered_at timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    UNIQUE (public_key)
);

-- On the provincial instance: the newest revision of each (instance, enterprise, day)
-- received. A replay of the same revision changes nothing; a newer one replaces it.
CREATE TABLE federation_report (
    instance_id text NOT NULL REFERENCES federation_peer (instance_id),
    enterprise  char(18) NOT NULL,
    day         date NOT NULL,
    revision    bigint NOT NULL CHECK (revision >= 1),
    received_at timestamptz NOT NULL DEFAULT now(),
    generated_at timestamptz NOT NULL,
    body        jsonb NOT NULL,
    digest      bytea NOT NULL,  -- SHA-256 of the signed bytes
    PRIMARY KEY (instance_id, enterprise, day)
);
CREATE INDEX federation_report_day ON federation_report (day);

-- On the cluster instance: what is to be sent, with its delivery state. A body is
-- enqueued when the day's aggregates of an enterprise differ from the last enqueued.
CREATE TABLE federation_outbox (
    id              bigserial PRIMARY KEY,
    enterprise      char(18) NOT NULL,
    day             date NOT NULL,
    revision        bigint NOT NULL CHECK (revision >= 1),
    body            bytea NOT NULL,  -- the exact bytes that are signed and sent
    digest          bytea NOT NULL,  -- SHA-256 of the aggregates, to spot a change
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text,
    UNIQUE (enterprise, day, revision)
);
CREATE INDEX federation_outbox_due ON federation_outbox (next_attempt_at) WHERE sent_at IS NULL;
