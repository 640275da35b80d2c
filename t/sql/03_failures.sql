-- A failing event is marked failed with its error and undoes only its own
-- rows; an event the parser marked "invalid" is stored failed; events of
-- types that write no rows are stored processed.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-03', 'P03', 'WABA-P03', 'token-03')
       IS NOT NULL AS registered;

DO $$
DECLARE
    res  jsonb;
    w    meta_cloud_webhook_events;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.msg('P03', 'wamid.OK1'),
        -- not a MetaCloudMessageType label: the insert fails, after its
        -- media row was written (which must be undone with it)
        pg_temp.msg('P03', 'wamid.BAD', jsonb_build_object(
            'message', jsonb_build_object('type', 'BOGUS'),
            'media', jsonb_build_object('mediaId', 'MEDIA-BAD', 'type', 'IMAGE'))),
        pg_temp.msg('P03', 'wamid.OK2'),
        -- a status whose wamid is known from this batch (sorted after it)
        pg_temp.st('P03', 'wamid.OK1', 'DELIVERED', 1749416400),
        -- the parser could not use this item
        jsonb_build_object('v', 1, 'field', 'messages', 'eventType', 'message',
            'scope', 'P03', 'webhookId', 'item:abc:0:0:3',
            'phoneNumberId', 'P03', 'invalid', 'message without id',
            'payload', jsonb_build_object('type', 'text')),
        -- value-level error and an account field: stored, nothing to write
        jsonb_build_object('v', 1, 'field', 'messages', 'eventType', 'error',
            'scope', 'P03', 'webhookId', 'item:abc:0:0:0',
            'phoneNumberId', 'P03',
            'payload', jsonb_build_object('code', 130429)),
        jsonb_build_object('v', 1, 'field', 'account_update',
            'eventType', 'generic', 'scope', 'waba:WABA-P03',
            'webhookId', 'item:abc:1:0:0', 'wabaId', 'WABA-P03',
            'payload', jsonb_build_object('event', 'PARTNER_REMOVED')),
        -- a contract violation: no key at all
        jsonb_build_object('v', 1, 'eventType', 'message')));

    PERFORM pg_temp.is((res ->> 'inserted')::int, 8, 'all stored');
    PERFORM pg_temp.is((res ->> 'failed')::int, 3, 'failed: bad, invalid, keyless');
    PERFORM pg_temp.is((res ->> 'unrouted')::int, 0, 'unrouted');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 0,
                       'failed event media not queued');

    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE "phoneNumberId" = 'P03'
                           AND wamid IN ('wamid.OK1', 'wamid.OK2'))::int, 2,
                       'siblings kept');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.BAD')::int, 0, 'bad message undone');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_media
                         WHERE "mediaId" = 'MEDIA-BAD')::int, 0,
                       'bad message media undone');
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.OK1'), 'DELIVERED',
                       'sibling status applied');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P03' AND "webhookId" = 'msg:wamid.BAD';
    PERFORM pg_temp.is(w."processed", false, 'bad not processed');
    PERFORM pg_temp.is(w."processedAt", NULL, 'bad processedAt');
    PERFORM pg_temp.is(w."error" LIKE '%invalid input value for enum%', true,
                       'bad error is SQLERRM: ' || coalesce(w."error", 'NULL'));

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P03' AND "webhookId" = 'item:abc:0:0:3';
    PERFORM pg_temp.is(w."processed", false, 'invalid not processed');
    PERFORM pg_temp.is(w."error", 'message without id', 'invalid reason');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P03' AND "webhookId" = 'item:abc:0:0:0';
    PERFORM pg_temp.is(w."processed", true, 'error event processed');
    PERFORM pg_temp.is(w."eventType", 'error', 'error event type');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'waba:WABA-P03';
    PERFORM pg_temp.is(w."processed", true, 'account event processed');
    PERFORM pg_temp.is(w."organizationId", 'org-03', 'account event routed by WABA');
    PERFORM pg_temp.is(w."phoneNumberId", NULL, 'account event has no number');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'invalid' AND "rawRequestId" = res ->> 'rawId';
    PERFORM pg_temp.is(w."error", 'event without scope or webhookId',
                       'keyless event kept');

    -- the failed event is not processed again by a retry
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P03', 'wamid.BAD',
                jsonb_build_object('message', jsonb_build_object('type', 'BOGUS')))));
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 1, 'failed retry is duplicate');

    -- ... but an administrator can replay it once the cause is fixed
    UPDATE meta_cloud_webhook_events
       SET "event" = jsonb_set("event", '{message,type}', '"TEXT"')
     WHERE scope = 'P03' AND "webhookId" = 'msg:wamid.BAD';
    PERFORM pg_temp.is(metacloud_replay_event((SELECT id FROM meta_cloud_webhook_events
                         WHERE scope = 'P03' AND "webhookId" = 'msg:wamid.BAD')),
                       'ok', 'replay after fix');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.BAD')::int, 1, 'replayed message');
    PERFORM pg_temp.is(metacloud_replay_event((SELECT id FROM meta_cloud_webhook_events
                         WHERE scope = 'P03' AND "webhookId" = 'msg:wamid.BAD')),
                       'processed', 'never processed twice');
END
$$;

ROLLBACK;
