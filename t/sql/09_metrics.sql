-- The metrics' functions: metacloud_backlog() counts what waits (unrouted
-- and pending events, media not downloaded or given up) and
-- metacloud_organizations() names the organisations of a delivery; both
-- callable by metacloud_module.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-09', 'P09', 'WABA-P09', 'token-09')
       IS NOT NULL AS registered;
SELECT metacloud_add_phone_number('org-09b', 'P09B', 'WABA-P09B', 'token-09b')
       IS NOT NULL AS registered;

DO $$
DECLARE
    b    record;
    b0   record;
BEGIN
    SELECT * INTO STRICT b0 FROM metacloud_backlog();

    PERFORM pg_temp.ingest(jsonb_build_array(
        -- processed: not a backlog
        pg_temp.msg('P09', 'wamid.B1'),
        -- a status of a message never seen: pending
        pg_temp.st('P09', 'wamid.B-none', 'DELIVERED', 1749416500),
        -- unrouted message and status
        pg_temp.msg('P09-unknown', 'wamid.B2'),
        pg_temp.st('P09-unknown', 'wamid.B3', 'READ', 1749416500),
        -- a message with media: one PENDING media row
        pg_temp.msg('P09', 'wamid.B4', jsonb_build_object(
            'media', jsonb_build_object('mediaId', 'MEDIA-B4',
                                        'type', 'IMAGE')))));

    SELECT * INTO STRICT b FROM metacloud_backlog();
    PERFORM pg_temp.is(b.events_unprocessed - b0.events_unprocessed, 3::bigint,
                       'unprocessed: pending status and two unrouted');
    PERFORM pg_temp.is(b.statuses_pending - b0.statuses_pending, 1::bigint,
                       'statuses pending: the routed one only');
    PERFORM pg_temp.is(b.media_pending - b0.media_pending, 1::bigint,
                       'media pending');
    PERFORM pg_temp.is(b.media_failed - b0.media_failed, 0::bigint,
                       'no media failed');

    UPDATE meta_cloud_media SET "status" = 'FAILED'
     WHERE "mediaId" = 'MEDIA-B4';
    SELECT * INTO STRICT b FROM metacloud_backlog();
    PERFORM pg_temp.is(b.media_pending - b0.media_pending, 0::bigint,
                       'media failed is not pending');
    PERFORM pg_temp.is(b.media_failed - b0.media_failed, 1::bigint,
                       'media failed');

    PERFORM pg_temp.is(metacloud_organizations(jsonb_build_array(
                           pg_temp.msg('P09B', 'x'), pg_temp.msg('P09', 'y'),
                           pg_temp.msg('P09', 'z'),
                           pg_temp.msg('nobody', 'w'))),
                       '["org-09", "org-09b"]'::jsonb,
                       'organisations: distinct, sorted, routed only');
    PERFORM pg_temp.is(metacloud_organizations(jsonb_build_array(
                           jsonb_build_object('scope', 'waba:WABA-P09'))),
                       '["org-09"]'::jsonb, 'organisations: a waba scope');
    PERFORM pg_temp.is(metacloud_organizations('[]'), '[]'::jsonb,
                       'organisations: none');
    PERFORM pg_temp.is(metacloud_organizations('{}'), '[]'::jsonb,
                       'organisations: not an array');
END
$$;

-- the module's role may call both
SET ROLE metacloud_module;
SELECT events_unprocessed >= 0 AS ok FROM metacloud_backlog();
SELECT metacloud_organizations('[]') = '[]' AS ok;
RESET ROLE;

ROLLBACK;
