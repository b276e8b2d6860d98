-- Users, their grants, machine tokens, login attempts and the audit log (DESIGN §8).

CREATE TABLE app_user (
    id                  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    full_name           text,
    password_hash       text NOT NULL,
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Access tokens issued before this instant are refused: a password change or a
    -- disabled account ends every session at once, not when the tokens expire.
    sessions_valid_from timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_grant (
    id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id integer NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    role    text NOT NULL CHECK (role IN ('admin', 'enterprise_engineer', 'enterprise_viewer',
                                          'cluster_operator', 'regional_analyst')),
    scope   text,
    CONSTRAINT user_grant_scope_fits_role CHECK ((role = 'admin') = (scope IS NULL))
);
CREATE UNIQUE INDEX user_grant_once_idx ON user_grant (user_id, role, coalesce(scope, ''));

-- Long-lived tokens for machines (scripts, federation, Grafana JSON sources). Only a
-- SHA-256 of the secret is kept; it is shown once when made. A token acts with the
-- grants it was made with, each still held by its user when it is used.
CREATE TABLE api_token (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        integer NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    name           text NOT NULL,
    prefix         text NOT NULL,
    secret_sha256  bytea NOT NULL UNIQUE,
    grants         jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    last_used_at   timestamptz,
    last_used_from text
);
CREATE INDEX api_token_user_idx ON api_token (user_id);

-- Failed and successful logins, for the rate limit shared by every API process.
CREATE TABLE login_attempt (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    username    text NOT NULL,
    client_addr text NOT NULL,
    success     boolean NOT NULL
);
CREATE INDEX login_attempt_user_idx ON login_attempt (username, at) WHERE NOT success;
CREATE INDEX login_attempt_addr_idx ON login_attempt (client_addr, at) WHERE NOT success;

-- Append-only: rows can be added, never changed, and removed only once older than the
-- retention (at least 180 days, 等保 2.0), whoever asks.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text,
    actor_id    integer,
    action      text NOT NULL,
    method      text,
    route       text,
    object_type text,
    object_key  text,
    before      jsonb,
    after       jsonb,
    status      integer,
    client_addr text,
    detail      jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keep_days integer := greatest(180,
        coalesce(nullif(current_setting('zhizao.audit_retention_days', true), '')::integer, 180));
BEGIN
    IF TG_OP = 'DELETE' AND OLD.at < now() - make_interval(days => keep_days) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % of row % refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE FUNCTION audit_log_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: TRUNCATE refused'
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_no_truncate();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
