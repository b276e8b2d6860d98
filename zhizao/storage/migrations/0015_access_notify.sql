-- Every change to users and their grants is announced on the channel zhizao_access,
-- whoever makes it (an API process, `zhizao users`, hand-written SQL): API processes
-- keep who a caller is between requests only while they listen, and forget it all
-- on a notification (platform_api/principals.py). NOTIFY is delivered at commit, so
-- a revoked grant or a disabled account is in effect everywhere a few milliseconds
-- after the change commits.
CREATE FUNCTION access_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zhizao_access', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER app_user_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON app_user
    FOR EACH STATEMENT EXECUTE FUNCTION access_changed();
CREATE TRIGGER user_grant_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_grant
    FOR EACH STATEMENT EXECUTE FUNCTION access_changed();
