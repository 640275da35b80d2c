-- metacloud_purge_batch(): old raw requests and processed events go, in
-- batches; messages, statuses and unprocessed events stay; orphaned media
-- rows go and their files are queued for removal.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-09p', 'P09P', 'WABA-P09P', 'tok');

DO $$
DECLARE
    res    jsonb;
    n      int := 0;
    tot    int := 0;
    v_msg  text;
BEGIN
    -- old: two messages with a status, an unrouted event, a failed one
    PERFORM pg_temp.ingest(jsonb_build_array(
        pg_temp.msg('P09P', 'wamid.P1', jsonb_build_object('message',
            jsonb_build_object('direction', 'OUTBOUND')))));
    PERFORM pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P09P', 'wamid.P1', 'SENT', 1749416500)));
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09P', 'wamid.P2')));
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('UNKNOWN9', 'wamid.P3')));
    PERFORM pg_temp.ingest(jsonb_build_array(
        pg_temp.msg('P09P', 'wamid.P4') || '{"invalid": "broken"}'));
    UPDATE meta_cloud_webhook_events SET "receivedAt" = now() - interval '100 days';
    UPDATE meta_cloud_webhook_requests SET "receivedAt" = now() - interval '100 days';

    -- an old downloaded file no message uses any more, and one still used
    INSERT INTO meta_cloud_media ("mediaId", type, "organizationId", status,
                                  "storageProvider", "storageKey",
                                  "createdAt")
    VALUES ('M-ORPHAN', 'IMAGE', 'org-09p', 'DOWNLOADED', 'local',
            'org-09p/M-ORPHAN.jpg', now() - interval '100 days'),
           ('M-USED', 'IMAGE', 'org-09p', 'DOWNLOADED', 'local',
            'org-09p/M-USED.jpg', now() - interval '100 days');
    UPDATE meta_cloud_messages SET "mediaId" =
           (SELECT id FROM meta_cloud_media WHERE "mediaId" = 'M-USED')
     WHERE wamid = 'wamid.P2';

    -- new: one message
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09P', 'wamid.P5')));

    -- batches of 1 until nothing is left
    LOOP
        res := metacloud_purge_batch('30 days', '90 days', '7 days', 1);
        n := n + 1;
        PERFORM pg_temp.is((res ->> 'raw')::int <= 1 AND
                           (res ->> 'events')::int <= 1, true,
                           'at most one row per kind a batch');
        EXIT WHEN (res ->> 'raw')::int + (res ->> 'events')::int
                  + (res ->> 'media')::int + (res ->> 'expired')::int = 0;
        tot := tot + (res ->> 'raw')::int;
        EXIT WHEN n > 20;
    END LOOP;
    PERFORM pg_temp.is(tot, 5, 'the five old raw requests purged');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_requests)::int,
                       1, 'the new raw request kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events
                         WHERE processed)::int, 1,
                       'old processed events purged, the new one kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events
                         WHERE NOT processed)::int, 2,
                       'unrouted and failed events kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages)::int, 3,
                       'messages kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE "webhookEventId" IS NULL)::int, 2,
                       'old messages lose their event link');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_message_statuses)::int,
                       1, 'statuses kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_media)::int, 1,
                       'the orphaned media row purged, the used one kept');
    PERFORM pg_temp.is((SELECT "storageKey" || ' ' || reason
                          FROM meta_cloud_media_deletions),
                       'org-09p/M-ORPHAN.jpg purged',
                       'its file queued for removal');
    PERFORM pg_temp.is(current_setting('lock_timeout'), '0',
                       'the lock_timeout of a batch does not leak');

    -- metacloud_maintain(): a round of reprocessing and one batch
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09P', 'wamid.P6')));
    UPDATE meta_cloud_webhook_events SET "receivedAt" = now() - interval '100 days'
     WHERE "webhookId" = 'msg:wamid.P6';
    res := metacloud_maintain('30 days', '90 days');
    PERFORM pg_temp.is((res -> 'purge' ->> 'events')::int, 1, 'maintain purges');
    PERFORM pg_temp.is(res -> 'more', 'true'::jsonb, 'and says: more');
    res := metacloud_maintain('30 days', '90 days');
    PERFORM pg_temp.is(res -> 'more', 'false'::jsonb, 'then: no more');
    PERFORM pg_temp.is((res -> 'reprocess' ->> 'retried')::int, 0,
                       'nothing to reprocess');
END
$$;

ROLLBACK;
