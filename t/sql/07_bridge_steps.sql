-- The default bridge, one function at a time (sql/004): lead, identity,
-- conversation, ticket, message, change, status, contact; the optional
-- columns; the hooks' contract (a replaced hook survives a re-run, the
-- defaults are replaced).
BEGIN;
\ir helpers.psql

INSERT INTO "Organization" ("id") VALUES ('org-07'), ('org-07b');

DO $$
DECLARE
    a   text;
    b   text;
    c   text;
    l   "Lead";
BEGIN
    -- Lead ---------------------------------------------------------------
    PERFORM pg_temp.is(metacloud_bridge_default_lead('org-07', NULL, NULL,
                       'Nobody', NULL), NULL, 'lead: nobody named, no lead');

    a := metacloud_bridge_default_lead('org-07', '111', NULL, 'Ann', NULL);
    SELECT * INTO STRICT l FROM "Lead" WHERE "id" = a;
    PERFORM pg_temp.is(ROW(l."organizationId", l."phone", l."userId",
                           l."name")::text,
                       ROW('org-07', '111', NULL::text, 'Ann')::text,
                       'lead: created with its phone and name');

    -- found by phone; the user id filled in; name and username follow
    b := metacloud_bridge_default_lead('org-07', '111', 'US.1', 'Ann B',
                                       '@ann');
    PERFORM pg_temp.is(b, a, 'lead: found again by phone');
    SELECT * INTO STRICT l FROM "Lead" WHERE "id" = a;
    PERFORM pg_temp.is(ROW(l."phone", l."userId", l."name", l."username")::text,
                       ROW('111', 'US.1', 'Ann B', '@ann')::text,
                       'lead: user id filled in, name and username updated');

    -- found by user id alone (a BSUID-only payload), nothing lost
    b := metacloud_bridge_default_lead('org-07', NULL, 'US.1', NULL, NULL);
    PERFORM pg_temp.is(b, a, 'lead: found by user id alone');
    SELECT * INTO STRICT l FROM "Lead" WHERE "id" = a;
    PERFORM pg_temp.is(ROW(l."phone", l."name", l."username")::text,
                       ROW('111', 'Ann B', '@ann')::text,
                       'lead: a payload without them keeps phone and names');

    -- a BSUID-only contact gets a lead of its own
    b := metacloud_bridge_default_lead('org-07', NULL, 'US.2', 'Bo', NULL);
    PERFORM pg_temp.is((SELECT "phone" IS NULL AND "userId" = 'US.2'
                          FROM "Lead" WHERE "id" = b), true,
                       'lead: BSUID only, no phone');
    -- the same person in another organisation: another lead
    c := metacloud_bridge_default_lead('org-07b', '111', NULL, 'Ann', NULL);
    PERFORM pg_temp.is(c <> a, true, 'lead: one per organisation');

    -- Identity -------------------------------------------------------------
    b := metacloud_bridge_default_identity('org-07', '111', 'US.1',
                                           '222', 'US.1');
    PERFORM pg_temp.is(b, a, 'identity: the same lead');
    PERFORM pg_temp.is((SELECT "phone" FROM "Lead" WHERE "id" = a), '222',
                       'identity: the new number');
    b := metacloud_bridge_default_identity('org-07', '222', 'US.1',
                                           '222', 'US.9');
    PERFORM pg_temp.is((SELECT ROW("phone", "userId")::text FROM "Lead"
                         WHERE "id" = a), ROW('222', 'US.9')::text,
                       'identity: a new user id');
    PERFORM pg_temp.is(metacloud_bridge_default_lead('org-07', '222', NULL,
                                                     NULL, NULL), a,
                       'identity: found by the new number');
    PERFORM pg_temp.is((SELECT count(*) FROM "Lead"
                         WHERE "organizationId" = 'org-07')::int, 2,
                       'identity: no lead added');
    -- an identity nobody knew: a lead of the new identity
    b := metacloud_bridge_default_identity('org-07', '333', NULL, '444', NULL);
    PERFORM pg_temp.is((SELECT "phone" FROM "Lead" WHERE "id" = b), '444',
                       'identity: unknown old identity, the new one');
END
$$;

-- Conversation and ticket --------------------------------------------------
DO $$
DECLARE
    lead  text := metacloud_bridge_default_lead('org-07', '555', NULL, 'C',
                                                NULL);
    cv    text;
    cv2   text;
    t     text;
    r     "Conversation";
BEGIN
    cv := metacloud_bridge_default_conversation('org-07', 'P07', lead,
              to_timestamp(1000), true);
    SELECT * INTO STRICT r FROM "Conversation" WHERE "id" = cv;
    PERFORM pg_temp.is(ROW(r."leadId", r."phoneNumberId", r."lastMessageAt",
                           r."lastInboundAt")::text,
                       ROW(lead, 'P07', to_timestamp(1000),
                           to_timestamp(1000))::text,
                       'conversation: created with its times');

    -- an outbound message later: lastMessageAt only
    cv2 := metacloud_bridge_default_conversation('org-07', 'P07', lead,
               to_timestamp(2000), false);
    PERFORM pg_temp.is(cv2, cv, 'conversation: found again');
    SELECT * INTO STRICT r FROM "Conversation" WHERE "id" = cv;
    PERFORM pg_temp.is(ROW(r."lastMessageAt", r."lastInboundAt")::text,
                       ROW(to_timestamp(2000), to_timestamp(1000))::text,
                       'conversation: outbound moves lastMessageAt only');

    -- an old inbound message arriving late: nothing moves back
    PERFORM metacloud_bridge_default_conversation('org-07', 'P07', lead,
                to_timestamp(500), true);
    SELECT * INTO STRICT r FROM "Conversation" WHERE "id" = cv;
    PERFORM pg_temp.is(ROW(r."lastMessageAt", r."lastInboundAt")::text,
                       ROW(to_timestamp(2000), to_timestamp(1000))::text,
                       'conversation: a late old message moves nothing back');
    PERFORM metacloud_bridge_default_conversation('org-07', 'P07', lead,
                to_timestamp(1500), true);
    SELECT * INTO STRICT r FROM "Conversation" WHERE "id" = cv;
    PERFORM pg_temp.is(r."lastInboundAt", to_timestamp(1500),
                       'conversation: a newer inbound moves lastInboundAt');

    -- another business number: another conversation
    cv2 := metacloud_bridge_default_conversation('org-07', 'P07b', lead,
               to_timestamp(1000), true);
    PERFORM pg_temp.is(cv2 <> cv, true, 'conversation: one per number');

    -- Ticket
    PERFORM pg_temp.is(metacloud_bridge_default_ticket('org-07', cv, false),
                       NULL, 'ticket: none open, none opened (echo/history)');
    t := metacloud_bridge_default_ticket('org-07', cv, true);
    PERFORM pg_temp.is((SELECT ROW("conversationId", "status")::text
                          FROM "Ticket" WHERE "id" = t),
                       ROW(cv, 'open')::text, 'ticket: opened');
    PERFORM pg_temp.is(metacloud_bridge_default_ticket('org-07', cv, true),
                       t, 'ticket: the open one again');
    PERFORM pg_temp.is(metacloud_bridge_default_ticket('org-07', cv, false),
                       t, 'ticket: echoes attach to the open one');
    UPDATE "Ticket" SET "status" = 'closed' WHERE "id" = t;
    PERFORM pg_temp.is(metacloud_bridge_default_ticket('org-07', cv, false),
                       NULL, 'ticket: closed, an echo opens none');
    PERFORM pg_temp.is(metacloud_bridge_default_ticket('org-07', cv, true)
                       <> t, true, 'ticket: closed, an inbound opens a new one');
    PERFORM pg_temp.is((SELECT count(*) FROM "Ticket"
                         WHERE "conversationId" = cv)::int, 2,
                       'ticket: two in all');
END
$$;

-- Message, change, status ------------------------------------------------------
DO $$
DECLARE
    m    meta_cloud_messages;
    ch   meta_cloud_messages;
    id1  text;
    r    "Message";
BEGIN
    m := jsonb_populate_record(NULL::meta_cloud_messages, jsonb_build_object(
             'id', 'mcm-1', 'organizationId', 'org-07', 'wamid', 'w1',
             'direction', 'INBOUND', 'type', 'IMAGE', 'rawType', 'image',
             'text', 'a caption', 'currentStatus', 'PENDING',
             'sentAt', to_timestamp(1000)));
    id1 := metacloud_bridge_default_message(m, NULL, NULL, NULL);
    SELECT * INTO STRICT r FROM "Message" WHERE "id" = id1;
    PERFORM pg_temp.is(ROW(r."organizationId", r."direction", r."type",
                           r."body", r."status", r."sentAt")::text,
                       ROW('org-07', 'INBOUND', 'image', 'a caption',
                           'PENDING', to_timestamp(1000))::text,
                       'message: a bridge row');

    -- history: the historical status; a second call completes, adds none
    m."messageId" := id1;
    m."text" := 'other';
    m."historyStatus" := 'read';
    PERFORM pg_temp.is(metacloud_bridge_default_message(m, NULL, NULL, NULL),
                       id1, 'message: called again, the same row');
    SELECT * INTO STRICT r FROM "Message" WHERE "id" = id1;
    PERFORM pg_temp.is(ROW(r."body", r."status")::text,
                       ROW('a caption', 'READ')::text,
                       'message: the first text kept, the history status');

    -- changes
    ch := jsonb_populate_record(NULL::meta_cloud_messages, jsonb_build_object(
              'type', 'REACTION', 'reactionEmoji', '👍',
              'sentAt', to_timestamp(1100)));
    PERFORM metacloud_bridge_default_change(ch, id1);
    PERFORM pg_temp.is((SELECT "reaction" FROM "Message" WHERE "id" = id1),
                       '👍', 'change: reaction set');
    ch."reactionEmoji" := NULL;
    PERFORM metacloud_bridge_default_change(ch, id1);
    PERFORM pg_temp.is((SELECT "reaction" FROM "Message" WHERE "id" = id1),
                       NULL, 'change: reaction removed');
    ch := jsonb_populate_record(NULL::meta_cloud_messages, jsonb_build_object(
              'type', 'EDIT', 'text', 'new caption',
              'sentAt', to_timestamp(1200)));
    PERFORM metacloud_bridge_default_change(ch, id1);
    ch."type" := 'REVOKE';
    ch."sentAt" := to_timestamp(1300);
    PERFORM metacloud_bridge_default_change(ch, id1);
    PERFORM metacloud_bridge_default_change(ch, NULL);
    SELECT * INTO STRICT r FROM "Message" WHERE "id" = id1;
    PERFORM pg_temp.is(ROW(r."body", r."editedAt", r."revokedAt")::text,
                       ROW('new caption', to_timestamp(1200),
                           to_timestamp(1300))::text,
                       'change: edit and revoke');
    PERFORM pg_temp.is((SELECT count(*) FROM "Message")::int, 1,
                       'change: nothing deleted, nothing added');

    -- status: never down the ladder, Message and CampaignRecipient
    INSERT INTO "CampaignRecipient" ("id", "organizationId", "wamid")
    VALUES ('cr-1', 'org-07', 'w1'), ('cr-x', 'org-07b', 'w1');
    PERFORM metacloud_bridge_default_status('org-07', id1, 'w1', 'DELIVERED');
    PERFORM pg_temp.is((SELECT "status" FROM "Message" WHERE "id" = id1),
                       'READ', 'status: READ not downgraded to DELIVERED');
    PERFORM pg_temp.is((SELECT "status" FROM "CampaignRecipient"
                         WHERE "id" = 'cr-1'), 'DELIVERED',
                       'status: the recipient (no status yet) DELIVERED');
    PERFORM metacloud_bridge_default_status('org-07', NULL, 'w1', 'SENT');
    PERFORM pg_temp.is((SELECT "status" FROM "CampaignRecipient"
                         WHERE "id" = 'cr-1'), 'DELIVERED',
                       'status: the recipient not downgraded');
    PERFORM metacloud_bridge_default_status('org-07', id1, 'w1', 'PLAYED');
    PERFORM pg_temp.is((SELECT ROW(m2."status", c2."status")::text
                          FROM "Message" m2, "CampaignRecipient" c2
                         WHERE m2."id" = id1 AND c2."id" = 'cr-1'),
                       ROW('PLAYED', 'PLAYED')::text, 'status: raised');
    PERFORM pg_temp.is((SELECT "status" FROM "CampaignRecipient"
                         WHERE "id" = 'cr-x'), NULL,
                       'status: another organisation''s recipient untouched');
END
$$;

-- Contacts (smb_app_state_sync) -----------------------------------------------
DO $$
DECLARE
    a  text;
BEGIN
    a := metacloud_bridge_default_contact('org-07', 'P07', jsonb_build_object(
             'action', 'add', 'name', 'Pablo Morales',
             'phoneNumber', '777', 'timestamp', 1739321024));
    PERFORM pg_temp.is((SELECT ROW("phone", "name")::text FROM "Lead"
                         WHERE "id" = a), ROW('777', 'Pablo Morales')::text,
                       'contact: add makes a lead');
    PERFORM pg_temp.is(metacloud_bridge_default_contact('org-07', 'P07',
                           jsonb_build_object('action', 'remove',
                               'phoneNumber', '777',
                               'timestamp', 1739321100)), a,
                       'contact: remove finds it');
    PERFORM pg_temp.is((SELECT ROW("name", "whatsappRemovedAt")::text
                          FROM "Lead" WHERE "id" = a),
                       ROW('Pablo Morales', to_timestamp(1739321100))::text,
                       'contact: remove sets whatsappRemovedAt, keeps it');
    PERFORM metacloud_bridge_default_contact('org-07', 'P07',
        jsonb_build_object('action', 'add', 'name', 'Pablo M.',
                           'phoneNumber', '777'));
    PERFORM pg_temp.is((SELECT ROW("name", "whatsappRemovedAt")::text
                          FROM "Lead" WHERE "id" = a),
                       ROW('Pablo M.', NULL::timestamptz)::text,
                       'contact: edit renames, brings it back');
    PERFORM pg_temp.is(metacloud_bridge_default_contact('org-07', 'P07',
                           jsonb_build_object('action', 'remove',
                                              'phoneNumber', '000')), NULL,
                       'contact: removing an unknown contact: nothing');
END
$$;

-- Optional columns: a platform table without them --------------------------------
ALTER TABLE "Lead" DROP COLUMN "username", DROP COLUMN "whatsappRemovedAt";
ALTER TABLE "Conversation" DROP COLUMN "lastInboundAt";
SELECT metacloud_bridge_refresh() = ARRAY['Message'] AS refreshed \gset
DO $$
DECLARE
    a   text;
    cv  text;
BEGIN
    PERFORM pg_temp.is(metacloud_bridge_has('Lead'), false, 'has: Lead');
    PERFORM pg_temp.is(metacloud_bridge_has('Message'), true, 'has: Message');
    a := metacloud_bridge_default_lead('org-07', '888', NULL, 'D', '@d');
    PERFORM pg_temp.is(metacloud_bridge_default_lead('org-07', '888', NULL,
                                                     'D2', '@d2'), a,
                       'optional: lead without username');
    PERFORM pg_temp.is((SELECT "name" FROM "Lead" WHERE "id" = a), 'D2',
                       'optional: the name still follows');
    cv := metacloud_bridge_default_conversation('org-07', 'P07', a,
              to_timestamp(1), true);
    PERFORM pg_temp.is(metacloud_bridge_default_conversation('org-07', 'P07',
                           a, to_timestamp(2), true), cv,
                       'optional: conversation without lastInboundAt');
    PERFORM metacloud_bridge_default_contact('org-07', 'P07',
        jsonb_build_object('action', 'remove', 'phoneNumber', '888'));
END
$$;

-- Hooks: a replaced one survives a re-run, the defaults are replaced -----------
CREATE OR REPLACE FUNCTION metacloud_bridge_ticket(p_org text,
    p_conversation text, p_open boolean)
RETURNS text LANGUAGE sql AS $f$ SELECT 'platform ticket'::text $f$;
CREATE OR REPLACE FUNCTION metacloud_bridge_default_status(p_org text,
    p_message text, p_wamid text, p_status text)
RETURNS void LANGUAGE sql AS $f$ SELECT 'edited in place' $f$;
DELETE FROM metacloud_schema_migrations WHERE version = 4;
SET client_min_messages = warning;
\ir ../../sql/004_metacloud_bridge.sql
RESET client_min_messages;
DO $$
BEGIN
    PERFORM pg_temp.is(metacloud_bridge_ticket('o', 'c', true),
                       'platform ticket', 'a replaced hook survives a re-run');
    PERFORM pg_temp.is((SELECT prosrc LIKE '%edited in place%' FROM pg_proc
                         WHERE oid = 'metacloud_bridge_default_status(text, text, text, text)'::regprocedure),
                       false, 'a default is brought back by a re-run');
    PERFORM pg_temp.is((SELECT prosrc FROM pg_proc
                         WHERE oid = 'metacloud_bridge_lead(text, text, text, text, text)'::regprocedure),
                       'SELECT metacloud_bridge_default_lead($1, $2, $3, $4, $5)',
                       'an untouched hook calls its default');
    PERFORM pg_temp.is(metacloud_schema_version() >= 4, true,
                       'version 4 (or later) again');
END
$$;

ROLLBACK;
