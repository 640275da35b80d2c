-- An event whose key or indexed values are far beyond the btree limit (a
-- caller that does not bound them as the module does) fails alone: the raw
-- row and the body's other events are stored, and a retry is a duplicate.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-07', 'P07', 'WABA-P07', 'token-07')
       IS NOT NULL AS registered;

-- 10 KB that do not compress (PostgreSQL compresses index entries)
CREATE FUNCTION pg_temp.long(seed text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(md5(seed || i), '') FROM generate_series(1, 320) i
$$;

DO $$
DECLARE
    res     jsonb;
    again   jsonb;
    evs     jsonb;
    w       meta_cloud_webhook_events;
    L       text := pg_temp.long('a');
BEGIN
    evs := jsonb_build_array(
        -- the key is 10 KB
        pg_temp.msg('P07', L),
        pg_temp.msg('P07', 'wamid.N1'),
        -- the scope (phone_number_id) is 10 KB
        pg_temp.msg('P07', 'wamid.N2', jsonb_build_object('scope', L)),
        -- a short key, but an indexed column of 10 KB: fails in processing
        pg_temp.msg('P07', 'wamid.N3',
            jsonb_build_object('message', jsonb_build_object('from', L))),
        -- a status of a 10 KB wamid that waits for its message: the
        -- pending index would hold the wamid
        pg_temp.st('P07', 'wamid.S', 'DELIVERED', 1749416400) ||
            jsonb_build_object('status', jsonb_build_object(
                'wamid', L, 'status', 'DELIVERED', 'statusRaw', 'delivered',
                'timestamp', 1749416400, 'recipientId', '1')),
        pg_temp.msg('P07', 'wamid.N4'));

    res := pg_temp.ingest(evs);

    PERFORM pg_temp.is((res ->> 'inserted')::int, 6, 'every event stored');
    PERFORM pg_temp.is((res ->> 'failed')::int, 4, 'the four long ones failed');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_requests
                         WHERE id = res ->> 'rawId')::int, 1, 'raw row stored');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE "phoneNumberId" = 'P07'
                           AND wamid IN ('wamid.N1', 'wamid.N4'))::int, 2,
                       'the ordinary messages stored');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.N3')::int, 0,
                       'the long "from" message undone');

    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events
                         WHERE scope = 'invalid'
                           AND "rawRequestId" = res ->> 'rawId'
                           AND "webhookId" LIKE 'failed:%'
                           AND "error" LIKE 'event not stored as sent: %')::int,
                       3, 'refused rows kept as failed, with the reason');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'invalid' AND "rawRequestId" = res ->> 'rawId'
       AND "payload" ->> 'id' = L;
    PERFORM pg_temp.is(w."processed", false, 'refused event not processed');
    PERFORM pg_temp.is(w."error" LIKE '%index row%', true,
                       'the reason names the index');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P07' AND "webhookId" = 'msg:wamid.N3';
    PERFORM pg_temp.is(w."processed", false, 'long column: failed');
    PERFORM pg_temp.is(w."error" IS NOT NULL, true, 'with its error');

    -- a retry of the same body: all duplicates, nothing stored twice
    again := pg_temp.ingest(evs);
    PERFORM pg_temp.is((again ->> 'duplicate')::int, 6, 'retry: duplicates');
    PERFORM pg_temp.is((again ->> 'inserted')::int, 0, 'retry: nothing new');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events
                         WHERE scope = 'invalid'
                           AND "webhookId" LIKE 'failed:%')::int, 3,
                       'retry: refused rows not doubled');
END
$$;

ROLLBACK;
