-- Statuses: every one recorded, currentStatus never downgraded, statuses
-- that arrive before their message applied when it arrives.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-02', 'P02', 'WABA-P02', 'token-02')
       IS NOT NULL AS registered;

DO $$
DECLARE
    res  jsonb;
    m    meta_cloud_messages;
    w    meta_cloud_webhook_events;
    s    meta_cloud_message_statuses;
BEGIN
    -- an outbound message (an echo) to attach statuses to
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P02', 'wamid.OUT1',
                jsonb_build_object('field', 'smb_message_echoes',
                    'message', jsonb_build_object('direction', 'OUTBOUND',
                        'source', 'echo', 'from', '15550001111',
                        'to', '16505551234', 'toUserId', 'US.9')),
                'echo')));
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'echo stored');

    -- sent + read in one delivery, listed out of order
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT1', 'READ', 1749416500),
        pg_temp.st('P02', 'wamid.OUT1', 'SENT', 1749416400,
                   extra => jsonb_build_object(
                       'pricingModel', 'PMP', 'pricingCategory', 'marketing',
                       'pricingType', 'regular', 'billable', true,
                       'conversationId', 'CONV', 'conversationExpiresAt', 1749500000,
                       'bizOpaqueCallbackData', 'opaque'))));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 2, 'two statuses');
    SELECT * INTO STRICT m FROM meta_cloud_messages
     WHERE "phoneNumberId" = 'P02' AND wamid = 'wamid.OUT1';
    PERFORM pg_temp.is(m."currentStatus"::text, 'READ', 'READ wins over SENT');
    PERFORM pg_temp.is(m."lastStatusUpdate", to_timestamp(1749416500),
                       'lastStatusUpdate of the current status');

    SELECT * INTO STRICT s FROM meta_cloud_message_statuses
     WHERE "messageId" = m.id AND status = 'SENT';
    PERFORM pg_temp.is(s."statusRaw", 'sent', 'statusRaw');
    PERFORM pg_temp.is(s."timestamp", '1749416400', 'status timestamp');
    PERFORM pg_temp.is(s."statusAt", to_timestamp(1749416400), 'statusAt');
    PERFORM pg_temp.is(s."pricingModel", 'PMP', 'pricingModel');
    PERFORM pg_temp.is(s."billable", true, 'billable');
    PERFORM pg_temp.is(s."conversationExpiresAt", to_timestamp(1749500000),
                       'conversationExpiresAt');
    PERFORM pg_temp.is(s."bizOpaqueCallbackData", 'opaque', 'opaque data');
    PERFORM pg_temp.is(s."wamid", 'wamid.OUT1', 'status wamid');

    -- a late DELIVERED and a FAILED after READ: recorded, no downgrade
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT1', 'DELIVERED', 1749416450),
        pg_temp.st('P02', 'wamid.OUT1', 'FAILED', 1749416600,
                   extra => jsonb_build_object('errorCode', 131049,
                       'errorTitle', 'ecosystem',
                       'errorDetails', jsonb_build_object('details', 'x')))));
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'late statuses failed');
    SELECT * INTO STRICT m FROM meta_cloud_messages WHERE id = m.id;
    PERFORM pg_temp.is(m."currentStatus"::text, 'READ', 'no downgrade');
    PERFORM pg_temp.is(m."lastStatusUpdate", to_timestamp(1749416500),
                       'lastStatusUpdate unchanged');
    PERFORM pg_temp.is((SELECT "errorDetails" ->> 'details'
                          FROM meta_cloud_message_statuses
                         WHERE "messageId" = m.id AND status = 'FAILED'),
                       'x', 'errorDetails');

    -- DELETED / WARNING / UNKNOWN never change currentStatus; PLAYED does
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT1', 'DELETED', 1749416700),
        pg_temp.st('P02', 'wamid.OUT1', 'UNKNOWN', 1749416700,
                   extra => jsonb_build_object('statusRaw', 'mystery'))));
    SELECT * INTO STRICT m FROM meta_cloud_messages WHERE id = m.id;
    PERFORM pg_temp.is(m."currentStatus"::text, 'READ', 'DELETED keeps READ');
    PERFORM pg_temp.is((SELECT "statusRaw" FROM meta_cloud_message_statuses
                         WHERE "messageId" = m.id AND status = 'UNKNOWN'),
                       'mystery', 'unknown status kept verbatim');
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT1', 'PLAYED', 1749416800)));
    SELECT * INTO STRICT m FROM meta_cloud_messages WHERE id = m.id;
    PERFORM pg_temp.is(m."currentStatus"::text, 'PLAYED', 'PLAYED upgrades');

    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_message_statuses
                         WHERE "messageId" = m.id)::int, 7, 'every status kept');

    -- FAILED then DELIVERED on another message: DELIVERED ranks higher
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P02', 'wamid.OUT2')));
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT2', 'FAILED', 1749416400)));
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT2', 'SENT', 1749416300)));
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.OUT2'), 'FAILED',
                       'SENT after FAILED keeps FAILED');
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT2', 'DELIVERED', 1749416500)));
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.OUT2'), 'DELIVERED',
                       'DELIVERED after FAILED');

    -- group receipts: one (wamid, status) per participant, all kept
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.OUT2', 'READ', 1749416900, 'PART-A'),
        pg_temp.st('P02', 'wamid.OUT2', 'READ', 1749416901, 'PART-B')));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 2, 'group receipts');
END
$$;

-- A status before its message: kept, not processed, applied on arrival
DO $$
DECLARE
    res  jsonb;
    w    meta_cloud_webhook_events;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.LATE', 'DELIVERED', 1749416400),
        pg_temp.st('P02', 'wamid.LATE', 'SENT', 1749416300)));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 2, 'early statuses stored');
    PERFORM pg_temp.is((res ->> 'pending')::int, 2, 'early statuses pending');
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'pending is not failed');
    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P02' AND "webhookId" = 'status:wamid.LATE:sent:16505551234';
    PERFORM pg_temp.is(w."processed", false, 'early status not processed');
    PERFORM pg_temp.is(w."error", 'message not found', 'early status error');

    -- the message arrives (here through the module)
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P02', 'wamid.LATE',
                jsonb_build_object('message', jsonb_build_object(
                    'direction', 'OUTBOUND')), 'echo')));
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'late message stored');
    SELECT * INTO STRICT w FROM meta_cloud_webhook_events WHERE id = w.id;
    PERFORM pg_temp.is(w."processed", true, 'early status now processed');
    PERFORM pg_temp.is(w."error", NULL, 'early status error cleared');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_message_statuses
                         WHERE wamid = 'wamid.LATE')::int, 2,
                       'early statuses recorded');
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.LATE'), 'DELIVERED',
                       'early statuses ranked');

    -- the platform records an API-sent message itself, after its status
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.API', 'SENT', 1749416300)));
    PERFORM pg_temp.is((res ->> 'pending')::int, 1, 'api status pending');
    INSERT INTO meta_cloud_messages ("wamid", "organizationId", "phoneNumberId",
                                     "direction", "to", "type", "sentAt")
    VALUES ('wamid.API', 'org-02', 'P02', 'OUTBOUND', '16505551234', 'TEXT', now());
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.API'), 'SENT',
                       'platform insert applies the waiting status');

    -- a status sub-object that matches nothing stays pending on a retry
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.NEVER', 'SENT', 1749416300)));
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P02', 'wamid.NEVER', 'SENT', 1749416300)));
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 1, 'pending retry is a duplicate');
END
$$;

ROLLBACK;
