-- A batch of metacloud_ingest_group() (sql/011): consecutive deliveries of
-- one message each, of different people, written together.  The same
-- deliveries are written twice from one state, as a group and one by one
-- with metacloud_ingest(), and every row a user reads must be the same:
-- results, raw rows, events, messages, statuses, and the bridge's leads,
-- conversations, tickets and "Message" rows (links read through their
-- natural keys, ids and clock times left out).  Then: which deliveries
-- went together (one sub-transaction each batch), and a batch that raises
-- written again one by one.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-14', 'P14', 'WABA-P14', 'token-14')
       IS NOT NULL AS registered;
-- a second number of the organisation: a message between the two is one
-- wamid seen by both
SELECT metacloud_add_phone_number('org-14', 'P14B', 'WABA-P14', 'token-14')
       IS NOT NULL AS registered_b;

-- the state both runs start from: a returning contact (4003: lead,
-- conversation, open ticket), a message already stored (wamid.Bdup), a
-- status waiting for its message (wamid.B8)
SELECT pg_temp.ingest(jsonb_build_array(pg_temp.msg('P14', 'wamid.B0',
           '{"message": {"from": "4003", "contactName": "Old Name",
                         "timestamp": 1749416000}}'))) ->> 'failed'
       AS returning_contact_failed;
SELECT pg_temp.ingest(jsonb_build_array(pg_temp.msg('P14', 'wamid.Bdup',
           '{"message": {"from": "4005"}}'))) ->> 'failed' AS dup_failed;
SELECT pg_temp.ingest(jsonb_build_array(pg_temp.st('P14', 'wamid.B8',
           'DELIVERED', 1749416390, '4008'))) ->> 'pending' AS pending;

-- the deliveries, n in the order of their people (the group's order)
CREATE TEMP TABLE deliveries (n int, events jsonb);
INSERT INTO deliveries VALUES
    (1, jsonb_build_array(pg_temp.msg('P14', 'wamid.B1',
            '{"message": {"from": "4001", "contactName": "Ann",
                          "text": "it''s ; DROP TABLE \"Lead\"; --"}}'))),
    (2, jsonb_build_array(pg_temp.msg('P14', 'wamid.B2',
            '{"message": {"from": "4002", "fromUserId": "US.4002"}}'))),
    -- a known person: the lead renamed, its conversation moved forward,
    -- its open ticket reused
    (3, jsonb_build_array(pg_temp.msg('P14', 'wamid.B3',
            '{"message": {"from": "4003", "contactName": "New Name",
                          "timestamp": 1749416500}}'))),
    -- an echo: the person is the recipient, no ticket opened
    (4, jsonb_build_array(pg_temp.msg('P14', 'wamid.B4',
            jsonb_build_object('field', 'smb_message_echoes',
                'message', jsonb_build_object('direction', 'OUTBOUND',
                    'source', 'echo', 'from', '15550001111', 'to', '4004')),
            'echo'))),
    -- one wamid on two numbers (P14B wrote to P14): the echo on P14B,
    -- the message on P14, two rows of one batch (n out of order: the
    -- group sorts by person)
    (13, jsonb_build_array(pg_temp.msg('P14B', 'wamid.Bboth',
            jsonb_build_object('field', 'smb_message_echoes',
                'message', jsonb_build_object('direction', 'OUTBOUND',
                    'source', 'echo', 'from', '40041', 'to', '40042')),
            'echo'))),
    (14, jsonb_build_array(pg_temp.msg('P14', 'wamid.Bboth',
            '{"message": {"from": "40043"}}'))),
    (5, jsonb_build_array(pg_temp.msg('P14', 'wamid.Bdup',
            '{"message": {"from": "4005"}}'))),
    (6, jsonb_build_array(pg_temp.msg('P14X', 'wamid.B6',
            '{"message": {"from": "4006"}}'))),
    (7, jsonb_build_array(pg_temp.msg('P14', 'wamid.B8',
            '{"message": {"from": "4008"}}'))),
    -- an image, and the same media forwarded by someone else: one media
    -- row, queued by the first
    (8, jsonb_build_array(pg_temp.msg('P14', 'wamid.B9',
            jsonb_build_object('message', jsonb_build_object(
                    'from', '4009', 'type', 'IMAGE', 'rawType', 'image'),
                'media', jsonb_build_object('mediaId', 'MEDIA-B9',
                    'type', 'IMAGE', 'mimeType', 'image/jpeg'))))),
    (9, jsonb_build_array(pg_temp.msg('P14', 'wamid.B9b',
            jsonb_build_object('message', jsonb_build_object(
                    'from', '40095', 'type', 'IMAGE', 'rawType', 'image'),
                'media', jsonb_build_object('mediaId', 'MEDIA-B9',
                    'type', 'IMAGE', 'mimeType', 'image/jpeg'))))),
    -- a reaction: not for a batch, runs alone between two batches
    (10, jsonb_build_array(pg_temp.msg('P14', 'wamid.B12',
            '{"message": {"from": "40096", "type": "REACTION",
                          "rawType": "reaction", "text": null,
                          "reactionEmoji": "+1",
                          "reactionMessageId": "wamid.B1"}}'))),
    (11, jsonb_build_array(pg_temp.msg('P14', 'wamid.B10',
            '{"message": {"from": "4010"}}'))),
    -- 4010 again: the batch ends before it, its message joins the lead
    (12, jsonb_build_array(pg_temp.msg('P14', 'wamid.B11',
            '{"message": {"from": "4010", "timestamp": 1749416999}}')));

-- what a user reads, without ids and clock times
CREATE FUNCTION pg_temp.snapshot() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        -- two bodies are the same (wamid.Bdup, sent again): the whole
        -- row breaks the tie, or their order is the heap's
        'requests', (SELECT jsonb_agg(x ORDER BY x ->> 'body', x)
                       FROM (SELECT jsonb_build_object(
                                 'body', convert_from(r."body", 'UTF8'),
                                 'outcome', r."outcome", 'error', r."error",
                                 'signatureChecked', r."signatureChecked",
                                 'eventCount', r."eventCount",
                                 'inserted', r."inserted",
                                 'duplicate', r."duplicate",
                                 'failed', r."failed",
                                 'unrouted', r."unrouted",
                                 'pending', r."pending",
                                 'sha', r."sha256" = sha256(r."body"))
                               FROM meta_cloud_webhook_requests r) AS q(x)),
        'events', (SELECT jsonb_agg(jsonb_build_object(
                       'key', w."webhookId", 'type', w."eventType",
                       'org', w."organizationId", 'processed', w."processed",
                       'at', w."processedAt" IS NOT NULL,
                       'error', w."error", 'unrouted', w."unrouted",
                       'payload', w."payload", 'event', w."event",
                       'raw', convert_from(r."body", 'UTF8'))
                       ORDER BY w."scope", w."webhookId")
                     FROM meta_cloud_webhook_events w
                     JOIN meta_cloud_webhook_requests r
                       ON r."id" = w."rawRequestId"),
        'messages', (SELECT jsonb_agg(to_jsonb(m)
                         - ARRAY['id', 'webhookEventId', 'mediaId', 'leadId',
                                 'conversationId', 'ticketId', 'messageId']
                         || jsonb_build_object(
                                'event', w."webhookId",
                                'media', md."mediaId",
                                'lead', l."phone",
                                'conversation', c."phoneNumberId" || '/'
                                                || cl."phone",
                                'ticket', t."status",
                                'message', g."body")
                         ORDER BY m."wamid", m."phoneNumberId")
                       FROM meta_cloud_messages m
                       JOIN meta_cloud_webhook_events w
                         ON w."id" = m."webhookEventId"
                       LEFT JOIN meta_cloud_media md ON md."id" = m."mediaId"
                       LEFT JOIN "Lead" l ON l."id" = m."leadId"
                       LEFT JOIN "Conversation" c
                         ON c."id" = m."conversationId"
                       LEFT JOIN "Lead" cl ON cl."id" = c."leadId"
                       LEFT JOIN "Ticket" t ON t."id" = m."ticketId"
                       LEFT JOIN "Message" g ON g."id" = m."messageId"),
        'statuses', (SELECT jsonb_agg(jsonb_build_object(
                         'wamid', m."wamid", 'status', s."status")
                         ORDER BY m."wamid", s."status")
                       FROM meta_cloud_message_statuses s
                       JOIN meta_cloud_messages m ON m."id" = s."messageId"),
        'leads', (SELECT jsonb_agg(jsonb_build_object(
                      'phone', l."phone", 'userId', l."userId",
                      'name', l."name", 'username', l."username",
                      'conversations', (SELECT count(*) FROM "Conversation" c
                                         WHERE c."leadId" = l."id"))
                      ORDER BY l."phone")
                    FROM "Lead" l WHERE l."organizationId" = 'org-14'),
        'conversations', (SELECT jsonb_agg(jsonb_build_object(
                              'lead', l."phone", 'number', c."phoneNumberId",
                              'last', c."lastMessageAt",
                              'lastInbound', c."lastInboundAt",
                              'tickets', (SELECT jsonb_agg(t."status")
                                            FROM "Ticket" t
                                           WHERE t."conversationId"
                                                 = c."id"))
                              ORDER BY l."phone")
                            FROM "Conversation" c
                            JOIN "Lead" l ON l."id" = c."leadId"),
        'bridgeMessages', (SELECT jsonb_agg(jsonb_build_object(
                               'lead', l."phone", 'direction', g."direction",
                               'type', g."type", 'body', g."body",
                               'status', g."status", 'sentAt', g."sentAt",
                               'reaction', g."reaction",
                               'ticket', g."ticketId" IS NOT NULL,
                               'conversation', c."leadId" = g."leadId")
                               ORDER BY l."phone", g."sentAt", g."body")
                             FROM "Message" g
                             JOIN "Lead" l ON l."id" = g."leadId"
                             JOIN "Conversation" c
                               ON c."id" = g."conversationId"))
$$;

CREATE TEMP TABLE results (how text, n int, error text, result jsonb,
                           raw_xmin text);
CREATE TEMP TABLE snap (how text, s jsonb);

-- as a group; what it wrote is read into psql variables, which the
-- rollback to the savepoint does not undo
SAVEPOINT before;
SELECT jsonb_agg(jsonb_build_object('n', g.ord, 'error', g.error,
                                     'result', g.result)) AS group_results
  FROM metacloud_ingest_group(
           ARRAY(SELECT convert_to(d.events::text, 'UTF8')
                   FROM deliveries d ORDER BY d.n),
           ARRAY(SELECT d.events::text FROM deliveries d ORDER BY d.n),
           ARRAY(SELECT '{"outcome": "ok", "signatureChecked": true}'
                   FROM deliveries d ORDER BY d.n)) AS g \gset
SELECT pg_temp.snapshot() AS group_snap \gset
-- the sub-transaction of each raw row
SELECT jsonb_object_agg(r."id", r.xmin::text) AS group_xmins
  FROM meta_cloud_webhook_requests r \gset
ROLLBACK TO SAVEPOINT before;

INSERT INTO results
SELECT 'group', x.n, x.error, x.result - 'rawId',
       :'group_xmins'::jsonb ->> (x.result ->> 'rawId')
  FROM jsonb_to_recordset(:'group_results'::jsonb)
       AS x(n int, error text, result jsonb);
INSERT INTO snap VALUES ('group', :'group_snap'::jsonb);

-- one by one
INSERT INTO results
SELECT 'one', d.n, NULL,
       pg_temp.ingest(d.events, '{"outcome": "ok", "signatureChecked": true}')
           - 'rawId', NULL
  FROM deliveries d ORDER BY d.n;
INSERT INTO snap SELECT 'one', pg_temp.snapshot();

DO $$
DECLARE
    g  jsonb := (SELECT s FROM snap WHERE how = 'group');
    o  jsonb := (SELECT s FROM snap WHERE how = 'one');
    k  text;
BEGIN
    PERFORM pg_temp.is((SELECT count(*) FROM results WHERE how = 'group'),
                       14::bigint, 'a row per delivery');
    PERFORM pg_temp.is((SELECT count(*) FROM results WHERE error IS NOT NULL),
                       0::bigint, 'no delivery failed');
    -- (a media row's id left out)
    PERFORM pg_temp.is((SELECT jsonb_object_agg(a.n, a.result #- '{media,0,id}'
                                                ORDER BY a.n)
                          FROM results a WHERE a.how = 'group'),
                       (SELECT jsonb_object_agg(a.n, a.result #- '{media,0,id}'
                                                ORDER BY a.n)
                          FROM results a WHERE a.how = 'one'),
                       'each delivery''s result, as a group and alone');
    FOR k IN SELECT jsonb_object_keys(o) LOOP
        PERFORM pg_temp.is(g -> k, o -> k,
                           k || ': the same rows as a group and alone');
    END LOOP;

    -- what the deliveries had to show, so that the two runs agreeing means
    -- something
    PERFORM pg_temp.is((SELECT array_agg(x ->> 'phone' || ':'
                                         || coalesce(x ->> 'name', '-') || ':'
                                         || (x ->> 'conversations'))
                          FROM jsonb_array_elements(o -> 'leads') x),
                       ARRAY['4001:Ann:1', '4002:-:1', '4003:New Name:1',
                             '4004:-:1', '40042:-:1', '40043:-:1', '4005:-:1',
                             '4008:-:1', '4009:-:1', '40095:-:1', '40096:-:1',
                             '4010:-:1'],
                       'a lead each (4003 renamed, 4010 once), one '
                       'conversation each');
    PERFORM pg_temp.is((SELECT array_agg(coalesce(x ->> 'tickets', '[]')
                                         ORDER BY x ->> 'lead')
                          FROM jsonb_array_elements(o -> 'conversations') x),
                       ARRAY['["open"]', '["open"]', '["open"]', '[]', '[]',
                             '["open"]', '["open"]', '["open"]', '["open"]',
                             '["open"]', '[]', '["open"]'],
                       'an open ticket each, none for the echo''s and the '
                       'reaction''s people');
    PERFORM pg_temp.is((SELECT x ->> 'last' FROM jsonb_array_elements(
                                                 o -> 'conversations') x
                         WHERE x ->> 'lead' = '4003'),
                       to_jsonb(to_timestamp(1749416500)) #>> '{}',
                       'the known conversation moved forward');
    PERFORM pg_temp.is((SELECT array_agg(x ->> 'wamid' || ':'
                                         || (x ->> 'currentStatus') || ':'
                                         || coalesce(x ->> 'lead', '-') || ':'
                                         || coalesce(x ->> 'message', '-'))
                          FROM jsonb_array_elements(o -> 'messages') x),
                       ARRAY['wamid.B0:PENDING:4003:hello',
                             'wamid.B1:PENDING:4001:it''s ; DROP TABLE '
                             '"Lead"; --',
                             'wamid.B10:PENDING:4010:hello',
                             'wamid.B11:PENDING:4010:hello',
                             'wamid.B12:PENDING:40096:-',
                             'wamid.B2:PENDING:4002:hello',
                             'wamid.B3:PENDING:4003:hello',
                             'wamid.B4:PENDING:4004:hello',
                             'wamid.B8:DELIVERED:4008:hello',
                             'wamid.B9:PENDING:4009:hello',
                             'wamid.B9b:PENDING:40095:hello',
                             'wamid.Bboth:PENDING:40043:hello',
                             'wamid.Bboth:PENDING:40042:hello',
                             'wamid.Bdup:PENDING:4005:hello'],
                       'every message linked; the waiting status applied');
    PERFORM pg_temp.is((SELECT array_agg(x::text ORDER BY (x ->> 'n')::int)
                          FROM (SELECT jsonb_build_object(
                                           'n', a.n,
                                           'd', a.result -> 'duplicate',
                                           'u', a.result -> 'unrouted')
                                  FROM results a WHERE a.how = 'one') AS y(x)
                         WHERE (x ->> 'd')::int + (x ->> 'u')::int > 0),
                       ARRAY['{"d": 1, "n": 5, "u": 0}',
                             '{"d": 0, "n": 6, "u": 1}'],
                       'the duplicate and the unrouted one');

    PERFORM pg_temp.is((SELECT x -> 'media' FROM jsonb_array_elements(
                                                  o -> 'messages') x
                         WHERE x ->> 'wamid' = 'wamid.B9b'),
                       to_jsonb('MEDIA-B9'::text),
                       'the forwarded image: the same media row');
    PERFORM pg_temp.is((SELECT array_agg(a.n || ':' || (a.result -> 'media'
                                                        -> 0 ->> 'mediaId'))
                          FROM results a
                         WHERE a.how = 'group'
                           AND jsonb_array_length(a.result -> 'media') > 0),
                       ARRAY['8:MEDIA-B9'], 'queued once, by the first');
    PERFORM pg_temp.is((SELECT x ->> 'reaction' FROM jsonb_array_elements(
                                                     o -> 'bridgeMessages') x
                         WHERE x ->> 'lead' = '4001'),
                       '+1', 'the reaction reached its target');

    -- which went together: 1-9, 13 and 14 one batch (one
    -- sub-transaction), 10 alone (a reaction), 11 alone (a batch of one:
    -- 12 is its person again), 12 alone (a batch of one at the end)
    PERFORM pg_temp.is((SELECT count(DISTINCT raw_xmin) FROM results
                         WHERE how = 'group' AND (n <= 9 OR n >= 13)),
                       1::bigint, 'deliveries 1-9, 13 and 14: one batch');
    PERFORM pg_temp.is((SELECT count(DISTINCT raw_xmin) FROM results
                         WHERE how = 'group'), 4::bigint,
                       'then 10, 11 and 12 each in a sub-transaction of '
                       'its own');
END
$$;

-- A batch that raises (a platform trigger refusing one message's "Lead"
-- row): undone, then each delivery alone, where the refused event fails
-- alone (stored, marked failed), as it would outside a group.
CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW."phone" = '5002' THEN
        RAISE EXCEPTION 'batch test: lead refused';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refuse BEFORE INSERT ON "Lead"
    FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse();

DO $$
DECLARE
    r       record;
    errs    text[];
    failed  int[];
BEGIN
    FOR r IN SELECT g.ord, g.error, g.result
               FROM metacloud_ingest_group(
                        ARRAY[convert_to('a', 'UTF8'), convert_to('b', 'UTF8'),
                              convert_to('c', 'UTF8')],
                        ARRAY[jsonb_build_array(pg_temp.msg('P14', 'wamid.C1',
                                  '{"message": {"from": "5001"}}'))::text,
                              jsonb_build_array(pg_temp.msg('P14', 'wamid.C2',
                                  '{"message": {"from": "5002"}}'))::text,
                              jsonb_build_array(pg_temp.msg('P14', 'wamid.C3',
                                  '{"message": {"from": "5003"}}'))::text],
                        ARRAY['{}', '{}', '{}']) AS g
              ORDER BY g.ord
    LOOP
        errs := errs || r.error;
        failed := failed || (r.result ->> 'failed')::int;
    END LOOP;

    PERFORM pg_temp.is(errs, ARRAY[NULL, NULL, NULL]::text[],
                       'no delivery fails');
    PERFORM pg_temp.is(failed, ARRAY[0, 1, 0], 'the refused event fails');
    PERFORM pg_temp.is((SELECT w."error" FROM meta_cloud_webhook_events w
                         WHERE w."webhookId" = 'msg:wamid.C2'),
                       'batch test: lead refused', 'its error on its row');
    PERFORM pg_temp.is((SELECT array_agg(l."phone" ORDER BY l."phone")
                          FROM "Lead" l WHERE l."phone" LIKE '500%'),
                       ARRAY['5001', '5003'], 'the others'' leads');
    PERFORM pg_temp.is((SELECT count(DISTINCT q.xmin::text)
                          FROM meta_cloud_webhook_requests q
                         WHERE convert_from(q."body", 'UTF8')
                               IN ('a', 'b', 'c')),
                       3::bigint, 'each in a sub-transaction of its own');
END
$$;

ROLLBACK;
