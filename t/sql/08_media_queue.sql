-- The media queue: claims with a lease and an attempt count, a stored
-- file, back-off, FAILED after the last attempt, EXPIRED, a lost worker's
-- lease, a late result of a superseded attempt, the token, the role.
-- now() is fixed inside this transaction: time passing is simulated by
-- moving "nextAttemptAt" / "leaseUntil" / "createdAt" into the past.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-08', 'P08', 'WABA-P08', 'token-08')
       IS NOT NULL AS registered;

CREATE FUNCTION pg_temp.img(wamid text, media_id text, mime text)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.msg('P08', wamid, jsonb_build_object(
        'message', jsonb_build_object('type', 'IMAGE', 'rawType', 'image'),
        'media', jsonb_strip_nulls(jsonb_build_object(
            'mediaId', media_id, 'type', 'IMAGE', 'mimeType', mime,
            'sha256', 'b64==',
            'downloadUrl', 'https://lookaside.fbsbx.com/' || media_id))))
$$;

CREATE FUNCTION pg_temp.m(media_id text) RETURNS meta_cloud_media
LANGUAGE sql AS $$
    SELECT * FROM meta_cloud_media WHERE "mediaId" = media_id
$$;

DO $$
DECLARE
    res   jsonb;
    ids   text[];
    c     record;
    n     int;
    md    meta_cloud_media;
    st    text;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
               pg_temp.img('wamid.Q1', 'MQ-1', 'image/jpeg'),
               pg_temp.img('wamid.Q2', 'MQ-2', NULL),
               pg_temp.img('wamid.Q3', 'MQ-3', 'image/png')));
    SELECT array_agg(e ->> 'id') INTO ids
      FROM jsonb_array_elements(res -> 'media') e;
    PERFORM pg_temp.is(cardinality(ids), 3, 'three media ids from ingest');

    -- claim the ingested ids, two at a time
    n := 0;
    FOR c IN SELECT * FROM metacloud_media_claim(ids, 2, '30 s', 3) LOOP
        n := n + 1;
        PERFORM pg_temp.is(c.attempt, 1, 'first attempt');
        PERFORM pg_temp.is(c.token, 'token-08', 'the number''s token');
        PERFORM pg_temp.is(c.organization_id, 'org-08', 'organization');
        PERFORM pg_temp.is(c.phone_number_id, 'P08', 'number');
        PERFORM pg_temp.is(c.url, 'https://lookaside.fbsbx.com/' || c.media_id,
                           'the webhook''s url while fresh');
        PERFORM pg_temp.is(c.day, to_char(now() AT TIME ZONE 'UTC',
                                          'YYYY/MM/DD'), 'day of the key');
    END LOOP;
    PERFORM pg_temp.is(n, 2, 'limit respected');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_media
                         WHERE "status" = 'DOWNLOADING'
                           AND "leaseUntil" = (now() + interval '30 s')::timestamptz(3)
                           AND "downloadAttempts" = 1
                           AND "lastDownloadAttempt" = now()::timestamptz(3))::int, 2,
                       'two rows DOWNLOADING with a lease');

    -- a second claimer sees only the third; then nothing
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(ids, 10, '30 s', 3))::int, 1,
                       'the rest claimed once');
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(NULL, 10, '30 s', 3))::int, 0,
                       'nothing left to sweep');

    -- done: DOWNLOADED, storage columns, lookup's mime only when missing
    PERFORM pg_temp.is(metacloud_media_done((pg_temp.m('MQ-1'))."id", 1,
                           'local', 'org-08/2026/01/02/MQ-1.jpg', NULL,
                           'https://cdn/org-08/2026/01/02/MQ-1.jpg', 1234,
                           'image/gif'), true, 'done applied');
    md := pg_temp.m('MQ-1');
    PERFORM pg_temp.is(md."status"::text, 'DOWNLOADED', 'downloaded');
    PERFORM pg_temp.is(md."storageProvider", 'local', 'provider');
    PERFORM pg_temp.is(md."storageKey", 'org-08/2026/01/02/MQ-1.jpg', 'key');
    PERFORM pg_temp.is(md."storageUrl",
                       'https://cdn/org-08/2026/01/02/MQ-1.jpg', 'url');
    PERFORM pg_temp.is(md."sizeBytes", 1234, 'size');
    PERFORM pg_temp.is(md."mimeType", 'image/jpeg', 'webhook mime kept');
    PERFORM pg_temp.is(md."leaseUntil", NULL, 'lease cleared');
    PERFORM pg_temp.is(metacloud_media_done(md."id", 1, 'local', 'x', NULL,
                           NULL, 1, NULL), false, 'done twice: no-op');

    PERFORM metacloud_media_done((pg_temp.m('MQ-2'))."id", 1, 's3',
                                 'org-08/k.bin', 'bucket', NULL, 5, 'image/webp');
    md := pg_temp.m('MQ-2');
    PERFORM pg_temp.is(md."mimeType", 'image/webp', 'lookup mime when none');
    PERFORM pg_temp.is(md."storageBucket", 'bucket', 'bucket');

    -- failures: back-off 10 s, 20 s, then FAILED on the third attempt
    md := pg_temp.m('MQ-3');
    st := metacloud_media_fail(md."id", 1, 'HTTP 500 from the file server',
                               false, 3, '10 s');
    PERFORM pg_temp.is(st, 'PENDING', 'first failure: pending again');
    md := pg_temp.m('MQ-3');
    PERFORM pg_temp.is(md."nextAttemptAt",
                       (now() + interval '10 s')::timestamptz(3),
                       'back-off 10 s');
    PERFORM pg_temp.is(md."downloadError", 'HTTP 500 from the file server',
                       'error kept');
    PERFORM pg_temp.is(md."downloadAttempts", 1, 'one attempt');
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(NULL, 10, '30 s', 3))::int, 0,
                       'not due yet');

    UPDATE meta_cloud_media SET "nextAttemptAt" = now() - interval '1 s'
     WHERE "id" = md."id";
    SELECT * INTO STRICT c FROM metacloud_media_claim(NULL, 10, '30 s', 3);
    PERFORM pg_temp.is(c.attempt, 2, 'second attempt');
    PERFORM pg_temp.is(c.url, 'https://lookaside.fbsbx.com/MQ-3',
                       'url still fresh');
    st := metacloud_media_fail(md."id", 2, repeat('x', 500), false, 3, '10 s');
    md := pg_temp.m('MQ-3');
    PERFORM pg_temp.is(md."nextAttemptAt",
                       (now() + interval '20 s')::timestamptz(3),
                       'back-off doubles');
    PERFORM pg_temp.is(length(md."downloadError"), 200, 'error cut to 200');

    -- the webhook's url is old now: the claim gives none (look it up)
    UPDATE meta_cloud_media SET "nextAttemptAt" = now() - interval '1 s',
                                "createdAt" = now() - interval '5 min'
     WHERE "id" = md."id";
    SELECT * INTO STRICT c FROM metacloud_media_claim(NULL, 10, '30 s', 3);
    PERFORM pg_temp.is(c.url, NULL, 'stale url not handed out');
    PERFORM pg_temp.is(c.attempt, 3, 'third attempt');
    PERFORM pg_temp.is(metacloud_media_fail(md."id", 3, 'timeout', false, 3,
                                            '10 s'), 'FAILED', 'FAILED');
    md := pg_temp.m('MQ-3');
    PERFORM pg_temp.is(md."status"::text, 'FAILED', 'row FAILED');
    PERFORM pg_temp.is(md."nextAttemptAt", NULL, 'no next attempt');
    PERFORM pg_temp.is(md."downloadAttempts", 3, 'three attempts');
END
$$;

-- a lost worker: its lease expires, the row is claimed again; its late
-- result is ignored; on the last attempt the row is FAILED
DO $$
DECLARE
    res   jsonb;
    id4   text;
    c     record;
    md    meta_cloud_media;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
               pg_temp.img('wamid.Q4', 'MQ-4', 'audio/ogg'),
               pg_temp.img('wamid.Q5', 'MQ-5', 'video/mp4')));
    id4 := res -> 'media' -> 0 ->> 'id';
    PERFORM metacloud_media_claim(ARRAY[id4], 1, '30 s', 2);
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(ARRAY[id4], 1, '30 s', 2))::int,
                       0, 'leased: not claimed again');

    UPDATE meta_cloud_media SET "leaseUntil" = now() - interval '1 s'
     WHERE "id" = id4;
    SELECT * INTO STRICT c FROM metacloud_media_claim(ARRAY[id4], 1, '30 s', 2);
    PERFORM pg_temp.is(c.attempt, 2, 'expired lease: claimed again');

    PERFORM pg_temp.is(metacloud_media_done(id4, 1, 'local', 'late', NULL, NULL,
                                            1, NULL), false,
                       'the lost attempt''s result is ignored');
    PERFORM pg_temp.is(metacloud_media_fail(id4, 1, 'late', false, 2, '1 s'),
                       NULL, 'its failure too');
    PERFORM pg_temp.is((pg_temp.m('MQ-4'))."status"::text, 'DOWNLOADING',
                       'still the new attempt''s');

    UPDATE meta_cloud_media SET "leaseUntil" = now() - interval '1 s'
     WHERE "id" = id4;
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(NULL, 10, '30 s', 2)
                         WHERE media_id = 'MQ-4')::int, 0,
                       'lost on its last attempt: not claimed');
    md := pg_temp.m('MQ-4');
    PERFORM pg_temp.is(md."status"::text, 'FAILED', 'FAILED');
    PERFORM pg_temp.is(md."downloadError", 'worker lost during the last attempt',
                       'the reason');

    -- EXPIRED at once, whatever the attempt
    md := pg_temp.m('MQ-5');
    PERFORM pg_temp.is(md."status"::text, 'DOWNLOADING', 'MQ-5 swept');
    PERFORM pg_temp.is(metacloud_media_fail(md."id", 1,
                           'media id unknown to the Graph API', true, 3, '1 s'),
                       'EXPIRED', 'EXPIRED');
    PERFORM pg_temp.is((pg_temp.m('MQ-5'))."nextAttemptAt", NULL,
                       'EXPIRED: no next attempt');

    -- rows written while media was off are swept too
    INSERT INTO meta_cloud_media ("mediaId", "type", "organizationId",
                                  "phoneNumberId")
    VALUES ('MQ-6', 'DOCUMENT', 'org-08', 'P08');
    SELECT * INTO STRICT c FROM metacloud_media_claim(NULL, 10, '30 s', 3);
    PERFORM pg_temp.is(c.media_id, 'MQ-6', 'old row swept');
    PERFORM pg_temp.is(c.mime_type, NULL, 'no mime: the lookup gives it');

    -- an unknown number: no token (the attempt fails with a 401 upstream)
    PERFORM pg_temp.is(metacloud_media_token('nobody'), NULL, 'no token');
END
$$;

-- the role may claim and mark, and read a token only through the function
SET ROLE metacloud_module;
DO $$
BEGIN
    PERFORM pg_temp.is(metacloud_media_token('P08'), 'token-08',
                       'role reads the token through the function');
    PERFORM pg_temp.is((SELECT count(*) FROM
                        metacloud_media_claim(NULL, 10, '30 s', 3))::int, 0,
                       'role may claim');
    BEGIN
        PERFORM count(*) FROM meta_cloud_media;
        RAISE EXCEPTION 'not ok: the role could SELECT meta_cloud_media';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
END
$$;
RESET ROLE;

ROLLBACK;
