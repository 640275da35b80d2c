-- The migrations: the newest schema version, and every file can be applied
-- again
-- (in a transaction rolled back at the end) without error or change; a
-- platform's replacement of a host hook survives a re-run.
BEGIN;
\ir helpers.psql

CREATE TEMP TABLE before_cols AS
    SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
      FROM information_schema.columns
     WHERE table_schema = current_schema();

CREATE OR REPLACE FUNCTION metacloud_on_message(p_message_id text)
RETURNS void LANGUAGE plpgsql AS $f$ BEGIN PERFORM 'platform hook'; END $f$;

SET client_min_messages = warning;
\ir ../../sql/001_platform_standalone.sql
\ir ../../sql/002_metacloud_schema.sql
\ir ../../sql/003_metacloud_ingest.sql
\ir ../../sql/003_metacloud_ingest.sql
\ir ../../sql/004_metacloud_bridge.sql
\ir ../../sql/004_metacloud_bridge.sql
\ir ../../sql/005_metacloud_media.sql
\ir ../../sql/005_metacloud_media.sql
\ir ../../sql/006_metacloud_operations.sql
\ir ../../sql/006_metacloud_operations.sql
\ir ../../sql/007_metacloud_event_guard.sql
\ir ../../sql/007_metacloud_event_guard.sql
\ir ../../sql/008_metacloud_metrics.sql
\ir ../../sql/008_metacloud_metrics.sql
\ir ../../sql/009_metacloud_media_cleanup.sql
\ir ../../sql/009_metacloud_media_cleanup.sql
RESET client_min_messages;

DO $$
BEGIN
    PERFORM pg_temp.is(metacloud_schema_version(),
                       (SELECT max(version) FROM metacloud_schema_migrations),
                       'schema version');
    PERFORM pg_temp.is((SELECT array_agg(version ORDER BY version)
                          FROM metacloud_schema_migrations)
                       @> ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9], true, 'recorded versions');
    PERFORM pg_temp.is((SELECT count(*) FROM (
                            SELECT table_name::text, column_name::text,
                                   data_type::text, is_nullable::text
                              FROM information_schema.columns
                             WHERE table_schema = current_schema()
                            EXCEPT SELECT * FROM before_cols) d)::int, 0,
                       'no column changed by a re-run');
    PERFORM pg_temp.is(
        (SELECT prosrc LIKE '%platform hook%' FROM pg_proc
          WHERE oid = 'metacloud_on_message(text)'::regprocedure),
        true, 'a replaced hook survives a re-run');

    -- the enum values the PRD lacks
    PERFORM pg_temp.is(
        (SELECT count(*) FROM unnest(enum_range(NULL::"MetaCloudMessageType")) v
          WHERE v::text IN ('BUTTON', 'ORDER', 'SYSTEM', 'REQUEST_WELCOME', 'EDIT',
                            'REVOKE', 'MEDIA_PLACEHOLDER', 'UNKNOWN'))::int,
        8, 'message types');
    PERFORM pg_temp.is(
        (SELECT count(*) FROM unnest(enum_range(NULL::"MetaCloudMessageStatusEnum")) v
          WHERE v::text IN ('PLAYED', 'DELETED', 'WARNING', 'UNKNOWN'))::int,
        4, 'status values');

    -- keys: per scope, per number, global media ids; no global webhookId
    PERFORM pg_temp.is(
        (SELECT count(*) FROM pg_indexes
          WHERE tablename = 'meta_cloud_webhook_events'
            AND indexdef LIKE 'CREATE UNIQUE INDEX%'
            AND indexdef LIKE '%"webhookId"%'
            AND indexdef NOT LIKE '%(scope, "webhookId")%')::int,
        0, 'no other unique index on webhookId');
    PERFORM pg_temp.is(
        (SELECT count(*) FROM pg_indexes
          WHERE tablename = 'meta_cloud_messages'
            AND indexdef LIKE 'CREATE UNIQUE INDEX%("phoneNumberId", wamid)')::int,
        1, 'unique (phoneNumberId, wamid)');
    PERFORM pg_temp.is(
        (SELECT count(*) FROM pg_indexes
          WHERE tablename = 'meta_cloud_media'
            AND indexdef LIKE 'CREATE UNIQUE INDEX%("mediaId")')::int,
        1, 'unique mediaId');
END
$$;

ROLLBACK;
