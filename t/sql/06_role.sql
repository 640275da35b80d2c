-- Least privilege: metacloud_module may execute metacloud_ingest(),
-- metacloud_ingest_group(), metacloud_schema_version(), the media queue's functions and the metrics'
-- metacloud_backlog() and metacloud_organizations(), and nothing else.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-06', 'P06', 'WABA-P06', 'token-06')
       IS NOT NULL AS registered;

DO $$
DECLARE
    r  record;
BEGIN
    PERFORM pg_temp.is((SELECT rolcanlogin FROM pg_roles
                         WHERE rolname = 'metacloud_module'), true, 'LOGIN role');
    PERFORM pg_temp.is((SELECT rolsuper OR rolcreaterole OR rolcreatedb
                              OR rolbypassrls
                          FROM pg_roles WHERE rolname = 'metacloud_module'),
                       false, 'no special attribute');

    FOR r IN SELECT c.oid::regclass AS t FROM pg_class c
              WHERE c.relnamespace = current_schema()::regnamespace
                AND c.relkind IN ('r', 'p')
    LOOP
        PERFORM pg_temp.is(has_table_privilege('metacloud_module', r.t,
                               'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'),
                           false, 'no privilege on ' || r.t);
    END LOOP;

    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND p.proname LIKE 'metacloud\_%'
    LOOP
        PERFORM pg_temp.is(has_function_privilege('metacloud_module', r.f, 'EXECUTE'),
                           r.f::text IN ('metacloud_ingest(bytea,jsonb,jsonb)',
                                         'metacloud_ingest_group(bytea[],text[],text[])',
                                         'metacloud_schema_version()',
                                         'metacloud_media_token(text)',
                                         'metacloud_media_claim(text[],integer,interval,integer)',
                                         'metacloud_media_done(text,integer,text,text,text,text,bigint,text)',
                                         'metacloud_media_fail(text,integer,text,boolean,integer,interval)',
                                         'metacloud_maintain(interval,interval,interval,integer)',
                                         'metacloud_backlog()',
                                         'metacloud_organizations(jsonb)',
                                         'metacloud_media_cleanup_claim(integer,interval)',
                                         'metacloud_media_cleanup_done(text[],integer[],text[],interval)',
                                         -- the tables' id default, as
                                         -- gen_random_uuid() was: PUBLIC
                                         'metacloud_new_id()'),
                           'EXECUTE on ' || r.f);
    END LOOP;

    -- the SECURITY DEFINER functions pin their search_path
    FOR r IN SELECT p.oid::regprocedure AS f, p.proconfig FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace
                AND p.proname LIKE 'metacloud\_%' AND p.prosecdef
    LOOP
        PERFORM pg_temp.is(EXISTS (SELECT 1 FROM unnest(r.proconfig) c
                                    WHERE c LIKE 'search\_path=%pg\_temp'),
                           true, 'pinned search_path on ' || r.f);
    END LOOP;
END
$$;

SET ROLE metacloud_module;

DO $$
DECLARE
    res  jsonb;
    ev   jsonb := pg_temp.msg('P06', 'wamid.ROLE');
BEGIN
    PERFORM pg_temp.is(metacloud_schema_version() >= 3, true, 'schema version');

    res := metacloud_ingest(convert_to(ev::text, 'UTF8'), jsonb_build_array(ev),
                            '{"outcome": "ok", "signatureChecked": true}');
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1, 'role can ingest');
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'role ingest processed');

    BEGIN
        PERFORM count(*) FROM meta_cloud_messages;
        RAISE EXCEPTION 'not ok: the role could SELECT meta_cloud_messages';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        PERFORM count(*) FROM meta_cloud_webhook_requests;
        RAISE EXCEPTION 'not ok: the role could SELECT meta_cloud_webhook_requests';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        PERFORM count(*) FROM "MetaWhatsAppCredential";
        RAISE EXCEPTION 'not ok: the role could read the access tokens';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        PERFORM metacloud_add_phone_number('org-x', 'P-x', NULL, 'stolen');
        RAISE EXCEPTION 'not ok: the role could register a number';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        INSERT INTO meta_cloud_webhook_events ("webhookId", "eventType", "scope", "payload")
        VALUES ('x', 'x', 'x', '{}');
        RAISE EXCEPTION 'not ok: the role could INSERT an event';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
END
$$;

RESET ROLE;

DO $$
BEGIN
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.ROLE')::int, 1,
                       'the role''s ingest wrote the message');
END
$$;

ROLLBACK;
