-- Messages and media: one row per (number, wamid), media PENDING and
-- returned for the download queue, duplicates swallowed, history media
-- attached to its placeholder in either order.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-01', 'P01', 'WABA-P01', 'token-01');
SELECT metacloud_add_phone_number('org-01', 'P01b', 'WABA-P01', 'token-01');

DO $$
DECLARE
    ev    jsonb := pg_temp.msg('P01', 'wamid.IMG1', jsonb_build_object(
                'message', jsonb_build_object(
                    'type', 'IMAGE', 'rawType', 'image', 'text', 'a caption',
                    'contactName', 'Sheena', 'contactWaId', '16505551234',
                    'isForwarded', true, 'forwardedCount', 1,
                    'contextMessageId', 'wamid.CTX', 'contextFrom', '15550001111',
                    'referral', jsonb_build_object('source_type', 'ad')),
                'media', jsonb_build_object(
                    'mediaId', 'MEDIA-1', 'type', 'IMAGE',
                    'mimeType', 'image/jpeg', 'sha256', 'b64==',
                    'caption', 'a caption',
                    'downloadUrl', 'https://lookaside.fbsbx.com/x')));
    v_body bytea := convert_to(ev::text || ' ', 'UTF8');
    res   jsonb;
    m     meta_cloud_messages;
    md    meta_cloud_media;
    rq    meta_cloud_webhook_requests;
    w     meta_cloud_webhook_events;
BEGIN
    res := metacloud_ingest(v_body, jsonb_build_array(ev),
                            '{"outcome": "ok", "signatureChecked": true}');
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1, 'inserted');
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 0, 'duplicate');
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'failed');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 1, 'media returned');
    PERFORM pg_temp.is(res -> 'media' -> 0 ->> 'mediaId', 'MEDIA-1', 'media id');

    SELECT * INTO STRICT m FROM meta_cloud_messages
     WHERE "phoneNumberId" = 'P01' AND wamid = 'wamid.IMG1';
    PERFORM pg_temp.is(m."organizationId", 'org-01', 'message org');
    PERFORM pg_temp.is(m."type"::text, 'IMAGE', 'type');
    PERFORM pg_temp.is(m."rawType", 'image', 'rawType');
    PERFORM pg_temp.is(m."direction"::text, 'INBOUND', 'direction');
    PERFORM pg_temp.is(m."from", '16505551234', 'from');
    PERFORM pg_temp.is(m."text", 'a caption', 'text');
    PERFORM pg_temp.is(m."timestamp", '1749416383', 'timestamp text');
    PERFORM pg_temp.is(m."sentAt", to_timestamp(1749416383), 'sentAt');
    PERFORM pg_temp.is(m."isForwarded", true, 'isForwarded');
    PERFORM pg_temp.is(m."isFrequentlyForwarded", false, 'isFrequentlyForwarded');
    PERFORM pg_temp.is(m."forwardedCount", 1, 'forwardedCount');
    PERFORM pg_temp.is(m."contextFrom", '15550001111', 'contextFrom');
    PERFORM pg_temp.is(m."referral" ->> 'source_type', 'ad', 'referral');
    PERFORM pg_temp.is(m."currentStatus"::text, 'PENDING', 'currentStatus');
    PERFORM pg_temp.is(m."rawMessageData", ev -> 'payload', 'rawMessageData');
    PERFORM pg_temp.is(m."source", 'webhook', 'source');
    PERFORM pg_temp.is(m."updatedAt" IS NOT NULL, true, 'updatedAt');

    SELECT * INTO STRICT md FROM meta_cloud_media WHERE "mediaId" = 'MEDIA-1';
    PERFORM pg_temp.is(md."id", res -> 'media' -> 0 ->> 'id', 'media row id');
    PERFORM pg_temp.is(m."mediaId", md."id", 'message linked to media');
    PERFORM pg_temp.is(md."status"::text, 'PENDING', 'media status');
    PERFORM pg_temp.is(md."mimeType", 'image/jpeg', 'mimeType');
    PERFORM pg_temp.is(md."organizationId", 'org-01', 'media org');
    PERFORM pg_temp.is(md."phoneNumberId", 'P01', 'media number');

    SELECT * INTO STRICT rq FROM meta_cloud_webhook_requests
     WHERE id = res ->> 'rawId';
    PERFORM pg_temp.is(rq."body", v_body, 'raw body exact');
    PERFORM pg_temp.is(rq."sha256", sha256(v_body), 'raw sha256');
    PERFORM pg_temp.is(rq."outcome", 'ok', 'raw outcome');
    PERFORM pg_temp.is(rq."signatureChecked", true, 'signatureChecked');
    PERFORM pg_temp.is(rq."inserted", 1, 'raw inserted count');

    SELECT * INTO STRICT w FROM meta_cloud_webhook_events
     WHERE scope = 'P01' AND "webhookId" = 'msg:wamid.IMG1';
    PERFORM pg_temp.is(w."processed", true, 'event processed');
    PERFORM pg_temp.is(w."processedAt" IS NOT NULL, true, 'processedAt');
    PERFORM pg_temp.is(w."error", NULL, 'event error');
    PERFORM pg_temp.is(w."rawRequestId", rq."id", 'event -> raw');
    PERFORM pg_temp.is(w."organizationId", 'org-01', 'event org');
    PERFORM pg_temp.is(w."payload", ev -> 'payload', 'event payload');
    PERFORM pg_temp.is(w."event" || jsonb_build_object('payload', w."payload"),
                       ev, 'stored event replays exactly');
    PERFORM pg_temp.is(m."webhookEventId", w."id", 'message -> event');

    -- the same delivery again (Meta's retry): a duplicate, nothing new
    res := metacloud_ingest(v_body, jsonb_build_array(ev));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 0, 'retry inserted');
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 1, 'retry duplicate');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 0, 'retry media');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.IMG1')::int, 1, 'one message');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_requests
                         WHERE sha256 = sha256(v_body))::int, 2,
                       'every delivery kept');

    -- the same event twice in one batch
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.T2'),
                                            pg_temp.msg('P01', 'wamid.T2')));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1, 'batch dup inserted');
    PERFORM pg_temp.is((res ->> 'duplicate')::int, 1, 'batch dup duplicate');

    -- the same wamid seen by the organisation's other number: its own row;
    -- the same Meta media id: one media row, linked twice, queued once
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01b', 'wamid.IMG1',
                jsonb_build_object(
                    'message', jsonb_build_object('type', 'IMAGE',
                                                  'rawType', 'image'),
                    'media', jsonb_build_object('mediaId', 'MEDIA-1',
                                                'type', 'IMAGE')))));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1, 'other number inserted');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 0,
                       'known media not queued again');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE wamid = 'wamid.IMG1')::int, 2,
                       'one row per number');
    PERFORM pg_temp.is((SELECT "mediaId" FROM meta_cloud_messages
                         WHERE wamid = 'wamid.IMG1' AND "phoneNumberId" = 'P01b'),
                       md."id", 'second message linked to the same media');

    -- BSUID era: no "from", a user id instead
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.BSUID',
                jsonb_build_object('message', jsonb_build_object(
                    'from', NULL, 'fromUserId', 'US.123',
                    'contactUserId', 'US.123')))));
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'bsuid failed');
    PERFORM pg_temp.is((SELECT "fromUserId" FROM meta_cloud_messages
                         WHERE wamid = 'wamid.BSUID' AND "from" IS NULL),
                       'US.123', 'bsuid message without from');
END
$$;

-- History: the placeholder first, then its media follow-up
DO $$
DECLARE
    res  jsonb;
    m    meta_cloud_messages;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.H1',
                jsonb_build_object('field', 'history', 'message',
                    jsonb_build_object('type', 'MEDIA_PLACEHOLDER',
                        'rawType', 'media_placeholder', 'text', NULL,
                        'source', 'history', 'historyStatus', 'READ')),
                'history_message')));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1, 'placeholder inserted');

    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.H1',
                jsonb_build_object('field', 'history',
                    'message', jsonb_build_object('type', 'IMAGE',
                        'rawType', 'image', 'text', 'late caption',
                        'source', 'history_media'),
                    'media', jsonb_build_object('mediaId', 'MEDIA-H1',
                        'type', 'IMAGE', 'mimeType', 'image/jpeg')),
                'history_media')));
    PERFORM pg_temp.is((res ->> 'inserted')::int, 1,
                       'history media is not a duplicate of its placeholder');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 1, 'history media queued');

    SELECT * INTO STRICT m FROM meta_cloud_messages
     WHERE "phoneNumberId" = 'P01' AND wamid = 'wamid.H1';
    PERFORM pg_temp.is(m."type"::text, 'IMAGE', 'placeholder became IMAGE');
    PERFORM pg_temp.is(m."historyStatus", 'READ', 'placeholder kept its status');
    PERFORM pg_temp.is(m."text", 'late caption', 'caption attached');
    PERFORM pg_temp.is(m."mediaId",
                       (SELECT id FROM meta_cloud_media WHERE "mediaId" = 'MEDIA-H1'),
                       'media attached to placeholder');

    -- the other order: media follow-up first, placeholder afterwards
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.H2',
                jsonb_build_object('field', 'history',
                    'message', jsonb_build_object('type', 'VIDEO',
                        'rawType', 'video', 'source', 'history_media'),
                    'media', jsonb_build_object('mediaId', 'MEDIA-H2',
                        'type', 'VIDEO')),
                'history_media')));
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P01', 'wamid.H2',
                jsonb_build_object('field', 'history', 'message',
                    jsonb_build_object('type', 'MEDIA_PLACEHOLDER',
                        'rawType', 'media_placeholder', 'source', 'history',
                        'historyStatus', 'DELIVERED', 'contactName', 'Ana')),
                'history_message')));
    PERFORM pg_temp.is((res ->> 'failed')::int, 0, 'late placeholder failed');
    SELECT * INTO STRICT m FROM meta_cloud_messages
     WHERE "phoneNumberId" = 'P01' AND wamid = 'wamid.H2';
    PERFORM pg_temp.is(m."type"::text, 'VIDEO', 'media type kept');
    PERFORM pg_temp.is(m."mediaId" IS NOT NULL, true, 'media kept');
    PERFORM pg_temp.is(m."historyStatus", 'DELIVERED', 'placeholder status added');
    PERFORM pg_temp.is(m."contactName", 'Ana', 'placeholder contact added');
END
$$;

ROLLBACK;
