-- Events of a number no organisation owns are kept "unrouted" and are
-- processed by metacloud_add_phone_number() once it is registered.
BEGIN;
\ir helpers.psql

DO $$
DECLARE
    res  jsonb;
    w    meta_cloud_webhook_events;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.st('P04', 'wamid.U1', 'READ', 1749416500),
        pg_temp.msg('P04', 'wamid.U1', jsonb_build_object(
            'media', jsonb_build_object('mediaId', 'MEDIA-U1', 'type', 'AUDIO',
                                        'voice', true))),
        jsonb_build_object('v', 1, 'field', 'account_update',
            'eventType', 'generic', 'scope', 'waba:WABA-P04',
            'webhookId', 'item:u:0:0:0', 'wabaId', 'WABA-P04',
            'payload', jsonb_build_object('event', 'VERIFIED_ACCOUNT'))));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 3, 'unrouted stored');
    PERFORM pg_temp.is((res ->> 'unrouted')::int, 3, 'unrouted counted');
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'unrouted is not failed');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 0, 'no media yet');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.U1')::int, 0, 'no message yet');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P04' AND "webhookId" = 'msg:wamid.U1';
    PERFORM pg_temp.is(w."unrouted", true, 'flagged unrouted');
    PERFORM pg_temp.is(w."processed", false, 'unrouted not processed');
    PERFORM pg_temp.is(w."organizationId", NULL, 'no organisation');

    -- a retry while still unrouted: a duplicate
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P04', 'wamid.U1')));
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 1, 'unrouted retry duplicate');

    res := metacloud_add_phone_number('org-04', 'P04', 'WABA-P04', 'token-04');
    PERFORM pg_temp.is((res ->> 'replayed')::int, 3, 'replayed');
    PERFORM pg_temp.is((res ->> 'processed')::int, 3, 'replayed processed');
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'replayed failed');
    PERFORM pg_temp.is((SELECT count(*) FROM "Organization"
                         WHERE id = 'org-04')::int, 1, 'organisation created');
    PERFORM pg_temp.is((SELECT "accessToken" FROM "MetaWhatsAppCredential"
                         WHERE "phoneNumberId" = 'P04'), 'token-04', 'credential');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events WHERE id = w.id;
    PERFORM pg_temp.is(w."unrouted", false, 'routed now');
    PERFORM pg_temp.is(w."processed", true, 'processed now');
    PERFORM pg_temp.is(w."organizationId", 'org-04', 'organisation now');
    PERFORM pg_temp.is((SELECT "organizationId" FROM meta_cloud_webhook_events
                         WHERE scope = 'waba:WABA-P04'), 'org-04',
                       'account event routed by WABA');

    -- the message, its media, and the status that was stored before it
    -- (replayed in order of arrival: the status waited, then was applied)
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE "phoneNumberId" = 'P04' AND wamid = 'wamid.U1'),
                       'READ', 'replayed message and status');
    PERFORM pg_temp.is((SELECT voice FROM meta_cloud_media
                         WHERE "mediaId" = 'MEDIA-U1'), true, 'replayed media');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events
                         WHERE scope = 'P04' AND NOT processed)::int, 0,
                       'nothing left unprocessed');

    -- re-registration updates the credential, replays nothing
    res := metacloud_add_phone_number('org-04', 'P04', 'WABA-P04', 'token-04b');
    PERFORM pg_temp.is((res ->> 'replayed')::int, 0, 'nothing to replay');
    PERFORM pg_temp.is((SELECT "accessToken" FROM "MetaWhatsAppCredential"
                         WHERE "phoneNumberId" = 'P04'), 'token-04b',
                       'credential updated');
    PERFORM pg_temp.is((SELECT count(*) FROM "MetaWhatsAppCredential"
                         WHERE "phoneNumberId" = 'P04')::int, 1,
                       'one credential per number');

    -- now routed on arrival
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P04', 'wamid.U2')));
    PERFORM pg_temp.is((res ->> 'unrouted')::int, 0, 'routed on arrival');
END
$$;

ROLLBACK;
