-- metacloud_reprocess(): failed events after a fix, statuses whose message
-- came out of the trigger's sight, unrouted events of a number the platform
-- registered; attempts are bounded; expired statuses are left alone.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-09', 'P09', 'WABA-P09', 'tok');

-- a hook that fails for one wamid (a platform bug), fixed below
CREATE OR REPLACE FUNCTION metacloud_on_message(p_message_id text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT wamid FROM meta_cloud_messages WHERE id = p_message_id)
       = 'wamid.R1' THEN
        RAISE EXCEPTION 'platform bug';
    END IF;
END $f$;

DO $$
DECLARE
    res  jsonb;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09', 'wamid.R1'),
                                            pg_temp.msg('P09', 'wamid.R2')));
    PERFORM pg_temp.is((res ->> 'failed')::int, 1, 'one failed');
    -- the PRD's summary fields
    PERFORM pg_temp.is(res -> 'received', 'true'::jsonb, 'received');
    PERFORM pg_temp.is((res ->> 'messagesProcessed')::int, 1,
                       'messagesProcessed: the one that did not fail');
    PERFORM pg_temp.is((res ->> 'statusesProcessed')::int, 0,
                       'statusesProcessed');

    -- a status whose message was committed while the status was stored:
    -- the trigger could not see it (simulated: trigger off for the insert)
    res := pg_temp.ingest(jsonb_build_array(
               pg_temp.st('P09', 'wamid.OUT9', 'DELIVERED', 1749416500)));
    PERFORM pg_temp.is((res ->> 'pending')::int, 1, 'status pending');
    PERFORM pg_temp.is((res ->> 'statusesProcessed')::int, 0,
                       'a pending status is not processed');
    ALTER TABLE meta_cloud_messages
        DISABLE TRIGGER meta_cloud_messages_apply_pending_statuses;
    INSERT INTO meta_cloud_messages (wamid, "organizationId", "phoneNumberId",
                                     direction, "from", type, "sentAt")
    VALUES ('wamid.OUT9', 'org-09', 'P09', 'OUTBOUND', '15550001111',
            'TEXT', now());
    ALTER TABLE meta_cloud_messages
        ENABLE TRIGGER meta_cloud_messages_apply_pending_statuses;

    -- an unrouted event, then the platform's own INSERT with the trigger
    -- off (a credential added before this migration existed)
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09B', 'wamid.R3')));
    PERFORM pg_temp.is((res ->> 'unrouted')::int, 1, 'unrouted');
    ALTER TABLE "MetaWhatsAppCredential"
        DISABLE TRIGGER metacloud_credential_changed;
    INSERT INTO "MetaWhatsAppCredential" ("organizationId", "phoneNumberId")
    VALUES ('org-09', 'P09B');
    ALTER TABLE "MetaWhatsAppCredential"
        ENABLE TRIGGER metacloud_credential_changed;

    -- a token refresh does not replay (nor lock) anything
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P09C', 'wamid.R4')));
    UPDATE "MetaWhatsAppCredential" SET "accessToken" = 'new'
     WHERE "phoneNumberId" = 'P09B';
    PERFORM pg_temp.is((SELECT unrouted FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.R4'), true,
                       'token refresh: nothing replayed');
    -- moving a credential to another number replays that number
    UPDATE "MetaWhatsAppCredential" SET "phoneNumberId" = 'P09C'
     WHERE "phoneNumberId" = 'P09' ;
    PERFORM pg_temp.is((SELECT processed FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.R4'), true,
                       'a credential moved to the number replays it');
    UPDATE "MetaWhatsAppCredential" SET "phoneNumberId" = 'P09'
     WHERE "phoneNumberId" = 'P09C';

    -- too early: nothing is old enough
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'retried')::int, 1,
                       'too early: only the unrouted event');
    PERFORM pg_temp.is((res ->> 'ok')::int, 1, 'the unrouted one processed');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.R3')::int, 1, 'R3 stored');

    -- not fixed yet, but old enough: retried, still failing, counted
    UPDATE meta_cloud_webhook_events
       SET "updatedAt" = now() - interval '1 hour',
           "receivedAt" = now() - interval '1 hour'
     WHERE NOT processed;
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'retried')::int, 2, 'failed and pending retried');
    PERFORM pg_temp.is((res ->> 'failed')::int, 1, 'still failing');
    PERFORM pg_temp.is((res ->> 'ok')::int, 1, 'the late status applied');
    PERFORM pg_temp.is((SELECT "currentStatus"::text FROM meta_cloud_messages
                         WHERE wamid = 'wamid.OUT9'), 'DELIVERED',
                       'late status applied to its message');
    PERFORM pg_temp.is((SELECT attempts FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.R1'), 1, 'attempts');
END
$$;

-- the fix
CREATE OR REPLACE FUNCTION metacloud_on_message(p_message_id text)
RETURNS void LANGUAGE plpgsql AS $f$ BEGIN NULL; END $f$;

DO $$
DECLARE
    res  jsonb;
BEGIN
    -- attempts exhausted: left alone
    UPDATE meta_cloud_webhook_events SET attempts = 5,
           "updatedAt" = now() - interval '1 hour'
     WHERE "webhookId" = 'msg:wamid.R1';
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'retried')::int, 0, 'no attempts left');

    UPDATE meta_cloud_webhook_events SET attempts = 1
     WHERE "webhookId" = 'msg:wamid.R1';
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'ok')::int, 1, 'after the fix: processed');
    PERFORM pg_temp.is((SELECT processed FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.R1'), true,
                       'event processed');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.R1')::int, 1, 'R1 stored once');
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'retried')::int, 0, 'nothing left');

    -- an expired status (metacloud_purge_batch's mark) is not retried
    res := pg_temp.ingest(jsonb_build_array(
               pg_temp.st('P09', 'wamid.GONE', 'READ', 1749416500)));
    UPDATE meta_cloud_webhook_events
       SET "receivedAt" = now() - interval '30 days'
     WHERE "webhookId" LIKE 'status:wamid.GONE:%';
    res := metacloud_purge_batch(NULL, NULL, '7 days', 100);
    PERFORM pg_temp.is((res ->> 'expired')::int, 1, 'status expired');
    PERFORM pg_temp.is((SELECT error FROM meta_cloud_webhook_events
                         WHERE "webhookId" LIKE 'status:wamid.GONE:%'),
                       'expired: message never seen', 'marked, kept');
    res := metacloud_reprocess();
    PERFORM pg_temp.is((res ->> 'retried')::int, 0, 'expired not retried');
END
$$;

ROLLBACK;
