-- 003_metacloud_ingest.sql
--
-- The functions the nginx module calls, the role it connects as, and the
-- grants (least privilege: the role may only execute metacloud_ingest() and
-- metacloud_schema_version()).
--
--   metacloud_ingest(raw bytea, events jsonb, info jsonb)   the one call:
--                                      defined (and granted) by
--                                      010_metacloud_set_ingest.sql, its
--                                      one home; the per-event rules it
--                                      calls are here
--   metacloud_schema_version()                              what is applied
--   (metacloud_add_phone_number() is in 006_metacloud_operations.sql)
--   metacloud_replay_event(event_id)   processes one stored, unprocessed
--                                      event again (administrators)
--   metacloud_on_message(id), metacloud_on_status(id),
--   metacloud_on_state_sync(org, phone, contact)
--                                      host hooks (Lead / Conversation /
--                                      Ticket / Message / CampaignRecipient
--                                      rules): no-ops here, 004 makes them
--                                      call the default bridge, a platform
--                                      may replace them; never overwritten
--                                      by a re-run of this file
--
-- The contract for "events" and "info" is docs/EVENTS.md.
--
-- Every SECURITY DEFINER function (the entry points and the trigger) is
-- created with the search_path pinned to this schema (then pg_temp, last):
-- it must not resolve names through the caller's search_path.  The internal
-- helpers metacloud_apply_status(), metacloud_process_event() and
-- metacloud_route() are executable by nobody but the owner and are only
-- called from those entry points: they run under the entry point's pinned
-- search_path and have no SET clause of their own (a SET clause costs a GUC
-- save/restore, a search_path switch and the revalidation of every cached
-- plan, on each call; and a SQL function with one is parsed again per
-- call).

CREATE TABLE IF NOT EXISTS metacloud_schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- "SET search_path FROM CURRENT" below records this value in each function.
DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_schema_version() ---------------------------------------------
-- The module refuses to serve (503) while this is below its
-- MC_SCHEMA_VERSION.  SECURITY DEFINER: the module's role cannot read the
-- migrations table.

CREATE OR REPLACE FUNCTION metacloud_schema_version()
RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    SELECT coalesce(max(version), 0) FROM metacloud_schema_migrations
$$;


-- metacloud_status_rank() ------------------------------------------------
-- currentStatus never goes down this ladder (Meta's statuses arrive out of
-- order; "failed" can follow "sent" and "delivered" can follow "failed").
-- DELETED, WARNING and UNKNOWN rank -1: recorded, never current.

CREATE OR REPLACE FUNCTION metacloud_status_rank(s "MetaCloudMessageStatusEnum")
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- compared as the enum, not as text: enum_out is only STABLE, and an
    -- IMMUTABLE SQL function calling it is not inlined (a function call
    -- per row, as pg_stat_statements showed in the status UPDATE)
    SELECT CASE s
               WHEN 'PENDING'   THEN 0
               WHEN 'SENT'      THEN 1
               WHEN 'FAILED'    THEN 2
               WHEN 'DELIVERED' THEN 3
               WHEN 'READ'      THEN 4
               WHEN 'PLAYED'    THEN 5
               ELSE -1
           END
$$;


-- Host hooks ---------------------------------------------------------------
-- Called once for every message row the module creates or completes, and
-- for every status row it records.  A platform replaces them (CREATE OR
-- REPLACE FUNCTION, same signature) to upsert its Lead, Conversation, Ticket
-- and Message rows or to update CampaignRecipient, without recompiling
-- nginx.  They run inside the event's sub-transaction: an error marks that
-- event failed and undoes its rows, never its siblings.  Created only when
-- missing so that re-running this file keeps the platform's versions.

DO $do$
BEGIN
    IF to_regprocedure('metacloud_on_message(text)') IS NULL THEN
        CREATE FUNCTION metacloud_on_message(p_message_id text)
        RETURNS void LANGUAGE plpgsql
        AS $f$ BEGIN NULL; END $f$;
        COMMENT ON FUNCTION metacloud_on_message(text) IS
            'host hook: a meta_cloud_messages row was created or completed';
    END IF;
    IF to_regprocedure('metacloud_on_status(text)') IS NULL THEN
        CREATE FUNCTION metacloud_on_status(p_status_id text)
        RETURNS void LANGUAGE plpgsql
        AS $f$ BEGIN NULL; END $f$;
        COMMENT ON FUNCTION metacloud_on_status(text) IS
            'host hook: a meta_cloud_message_statuses row was recorded';
    END IF;
    IF to_regprocedure('metacloud_on_state_sync(text, text, jsonb)') IS NULL
    THEN
        CREATE FUNCTION metacloud_on_state_sync(p_org text, p_phone text,
                                                p_contact jsonb)
        RETURNS void LANGUAGE plpgsql
        AS $f$ BEGIN NULL; END $f$;
        COMMENT ON FUNCTION metacloud_on_state_sync(text, text, jsonb) IS
            'host hook: a smb_app_state_sync contact (add, edit, remove)';
    END IF;
    -- not a hook: 004 replaces it with the default bridge's fast path,
    -- which makes the links before the row is inserted (no UPDATE after)
    IF to_regprocedure('metacloud_bridge_prepare(text, text, jsonb)') IS NULL
    THEN
        CREATE FUNCTION metacloud_bridge_prepare(p_org text, p_phone text,
            p_ev jsonb, OUT handled boolean, OUT lead_id text,
            OUT conversation_id text, OUT ticket_id text,
            OUT message_id text)
        LANGUAGE sql
        AS $f$ SELECT false, NULL::text, NULL::text, NULL::text,
                      NULL::text $f$;
    END IF;
END
$do$;


-- metacloud_hooks_default() ------------------------------------------------
-- Whether each hook of p_names is still the default the migrations made
-- (its source is the one in p_srcs), so that the set-based paths may apply
-- its rule themselves.  Read once per session, not once per message: it is
-- IMMUTABLE on purpose, and only ever called as
--
--     (v_never AND hook_1(NULL, ...) IS NULL AND ...
--              AND hook_n(NULL, ...) IS NULL)
--     OR metacloud_hooks_default(ARRAY[names], ARRAY[sources])
--
-- in a PL/pgSQL expression, v_never a variable that stays false.  The
-- planner evaluates this function once, when it plans that expression, and
-- the cached plan depends on the hooks the expression calls (a default is
-- an SQL function, which the planner inlines, recording the dependency; a
-- replaced one stays in the plan), though none of those calls ever runs.
-- A platform replacing a hook invalidates that plan in every session: the
-- next delivery plans it again and calls the replacement (t/sql/08,
-- t/45-bridge-conversation.t, t/46-bridge-statuses.t).  The query by name costs 60 to 180 us; in a
-- cached plan it costs nothing.  Not a hook: no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_hooks_default(p_names text[],
    p_srcs text[])
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RETURN (SELECT count(*) = cardinality(p_names)
              FROM pg_proc p
              JOIN unnest(p_names, p_srcs) AS d(name, src)
                ON p.proname = d.name
             WHERE pg_function_is_visible(p.oid) AND p.prosrc = d.src);
END
$$;

DROP FUNCTION IF EXISTS metacloud_bridge_status_default();


-- metacloud_apply_statuses() ----------------------------------------------
-- Records status sub-objects against their messages, in a few statements
-- whatever their number: p_event_ids, p_phones (the number of each) and
-- p_statuses (the sub-objects) side by side, in key order.  Inserts every
-- status whose message is known, raises "currentStatus" in one UPDATE
-- (never down the ladder of metacloud_status_rank(): the highest rank, the
-- first of equals), then the bridge: the default rule as two UPDATEs, or a
-- platform's metacloud_on_status() once per status.  Returns the event ids
-- whose status was recorded (NULL: none); the others wait for their
-- message.  Used by metacloud_ingest_set() for a whole delivery and by
-- metacloud_apply_status() for one.
--
-- The race with a message committing now: only a status whose message was
-- not found takes the (number, wamid) lock that the message's insert and
-- the pending-status trigger take, and looks again; a message found is
-- committed (or this transaction's own), and its status needs no lock.
-- (Every status took it before: 3.9% of a 50-status delivery, pgbench.)

CREATE OR REPLACE FUNCTION metacloud_apply_statuses(p_event_ids text[],
    p_phones text[], p_statuses jsonb[])
RETURNS text[]
LANGUAGE plpgsql
AS $$
DECLARE
    v_done        text[];
    v_id          text;
    v_status_ids  text[];
    v_status_msg  text[];
    v_status_st   text[];
    v_ids         text[] := p_event_ids;    -- this pass's statuses
    v_phones      text[] := p_phones;
    v_sts         jsonb[] := p_statuses;
    v_pos         int[];                    -- their places in key order
    v_got         int[];                    -- the places recorded
    v_first       int[];                    -- by the first pass
    v_never       boolean := false;     -- metacloud_hooks_default()
BEGIN
    IF EXISTS (SELECT FROM unnest(p_statuses) s
                WHERE jsonb_typeof(s) IS DISTINCT FROM 'object')
    THEN
        RAISE EXCEPTION 'status event without a status object';
    END IF;
    v_pos := ARRAY(SELECT generate_subscripts(p_event_ids, 1));

    -- every status whose message is known, in one statement (the
    -- sub-object's keys are the column names: docs/EVENTS.md), and
    -- "currentStatus" raised in one UPDATE, never down the ladder; a
    -- second pass for those whose message was not found, after their locks
    FOR pass IN 1 .. 2 LOOP
        WITH s AS (
            SELECT u.event_id, u.phone, u.st, u.n
              FROM unnest(v_ids, v_phones, v_sts, v_pos)
                   AS u(event_id, phone, st, n)
        ), ins AS (
            INSERT INTO meta_cloud_message_statuses
                   ("id", "messageId", "webhookEventId", "status",
                    "timestamp", "statusAt", "recipientId", "errorCode",
                    "errorTitle", "errorMessage", "errorDetails",
                    "pricingModel", "pricingCategory", "createdAt", "wamid",
                    "statusRaw", "recipientUserId", "recipientParentUserId",
                    "recipientType", "recipientParticipantId",
                    "recipientParticipantUserId", "errorHref",
                    "pricingType", "billable", "conversationId",
                    "conversationOriginType", "conversationExpiresAt",
                    "bizOpaqueCallbackData", "updatedAt")
            SELECT metacloud_new_id(), m."id", s.event_id, r."status",
                   r."timestamp",
                   coalesce(to_timestamp((s.st ->> 'timestamp')::bigint),
                            now()),
                   r."recipientId", r."errorCode", r."errorTitle",
                   r."errorMessage", r."errorDetails", r."pricingModel",
                   r."pricingCategory", now(), r."wamid", r."statusRaw",
                   r."recipientUserId", r."recipientParentUserId",
                   r."recipientType", r."recipientParticipantId",
                   r."recipientParticipantUserId", r."errorHref",
                   r."pricingType", r."billable", r."conversationId",
                   r."conversationOriginType",
                   to_timestamp((s.st ->> 'conversationExpiresAt')::bigint),
                   r."bizOpaqueCallbackData", now()
              FROM s
              JOIN meta_cloud_messages m
                ON m."phoneNumberId" = s.phone
               AND m."wamid" = s.st ->> 'wamid'
             CROSS JOIN LATERAL jsonb_populate_record(
                       NULL::meta_cloud_message_statuses,
                       s.st - 'conversationExpiresAt') AS r
             ORDER BY s.n
            RETURNING "id", "messageId", "webhookEventId", "status",
                      "statusAt"
        ), best AS (
            -- per message, what the loop left current: the highest rank,
            -- the first of equals in key order
            SELECT DISTINCT ON (ins."messageId") ins."messageId",
                   ins."status", ins."statusAt",
                   metacloud_status_rank(ins."status") AS rank
              FROM ins JOIN s ON s.event_id = ins."webhookEventId"
             ORDER BY ins."messageId",
                      metacloud_status_rank(ins."status") DESC, s.n
        ), up AS (
            UPDATE meta_cloud_messages t
               SET "currentStatus" = b."status",
                   "lastStatusUpdate" = b."statusAt",
                   "updatedAt" = now()
              FROM best b
             WHERE t."id" = b."messageId"
               AND metacloud_status_rank(t."currentStatus") < b.rank
        )
        SELECT v_done || array_agg(ins."webhookEventId" ORDER BY s.n),
               v_status_ids || array_agg(ins."id" ORDER BY s.n),
               v_status_msg || array_agg(ins."messageId" ORDER BY s.n),
               v_status_st || array_agg(ins."status"::text ORDER BY s.n),
               array_agg(s.n ORDER BY s.n)
          INTO v_done, v_status_ids, v_status_msg, v_status_st, v_got
          FROM ins JOIN s ON s.event_id = ins."webhookEventId";

        IF pass = 2 THEN
            -- the second pass's among the first's, in key order (the
            -- hooks below are called in that order)
            IF v_got IS NOT NULL THEN
                SELECT array_agg(x.d ORDER BY x.o),
                       array_agg(x.i ORDER BY x.o),
                       array_agg(x.m ORDER BY x.o),
                       array_agg(x.t ORDER BY x.o)
                  INTO v_done, v_status_ids, v_status_msg, v_status_st
                  FROM unnest(v_done, v_status_ids, v_status_msg,
                              v_status_st, v_first || v_got)
                       AS x(d, i, m, t, o);
            END IF;
            EXIT;
        END IF;
        EXIT WHEN coalesce(cardinality(v_got), 0) = cardinality(v_ids);

        -- the ones not found: each (number, wamid) lock, in one sorted
        -- pass (a message of theirs committing now is waited for, then
        -- seen by the next statement)
        v_first := coalesce(v_got, '{}');
        SELECT array_agg(x.id ORDER BY x.n), array_agg(x.phone ORDER BY x.n),
               array_agg(x.st ORDER BY x.n), array_agg(x.n ORDER BY x.n)
          INTO v_ids, v_phones, v_sts, v_pos
          FROM unnest(v_ids, v_phones, v_sts, v_pos) AS x(id, phone, st, n)
         WHERE x.n <> ALL (v_first);

        PERFORM pg_advisory_xact_lock(l.a, l.b)
           FROM (SELECT DISTINCT
                        hashtext(x.phone) AS a,
                        hashtext(x.st ->> 'wamid') AS b
                   FROM unnest(v_phones, v_sts) AS x(phone, st)
                  ORDER BY 1, 2) l;
    END LOOP;

    -- are the status hooks still the defaults of 004?
    -- (metacloud_hooks_default() above: read when this is planned)
    IF v_done IS NOT NULL
       AND ((v_never
             AND metacloud_on_status(NULL::text) IS NULL
             AND metacloud_bridge_status(NULL::text, NULL::text, NULL::text,
                                         NULL::text) IS NULL)
            OR metacloud_hooks_default(
                   ARRAY['metacloud_on_status', 'metacloud_bridge_status'],
                   ARRAY['SELECT metacloud_bridge_default_on_status($1)',
                         'SELECT metacloud_bridge_default_status'
                         '($1, $2, $3, $4)']))
    THEN
        -- metacloud_bridge_default_on_status() for all of them at once:
        -- a message whose currentStatus is one of the statuses just
        -- recorded passes it on (never down the ladder)
        WITH c AS (
            SELECT DISTINCT m."organizationId" AS org, m."messageId",
                   m."wamid", m."currentStatus"::text AS cur,
                   metacloud_bridge_rank(m."currentStatus"::text) AS rank
              FROM unnest(v_status_msg, v_status_st) AS u(id, st)
              JOIN meta_cloud_messages m
                ON m."id" = u.id AND m."currentStatus"::text = u.st
        ), bm AS (
            UPDATE "Message" x
               SET "status" = c.cur, "updatedAt" = now()
              FROM c
             WHERE x."id" = c."messageId"
               AND metacloud_bridge_rank(x."status") < c.rank
        )
        UPDATE "CampaignRecipient" x
           SET "status" = c.cur, "updatedAt" = now()
          FROM c
         WHERE x."wamid" = c."wamid" AND x."organizationId" = c.org
           AND metacloud_bridge_rank(x."status") < c.rank;
    ELSIF v_done IS NOT NULL THEN
        -- a platform's hooks: called for each status, in key order,
        -- once all of these statuses are recorded
        FOREACH v_id IN ARRAY v_status_ids LOOP
            PERFORM metacloud_on_status(v_id);
        END LOOP;
    END IF;

    RETURN v_done;
END
$$;


-- metacloud_apply_status() -----------------------------------------------
-- Records one status sub-object against its message: the rule above for
-- one.  Returns false, and writes nothing, when the message (phone number
-- + wamid) is not known yet.

CREATE OR REPLACE FUNCTION metacloud_apply_status(p_event_id text,
    p_phone text, s jsonb)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN metacloud_apply_statuses(ARRAY[p_event_id], ARRAY[p_phone],
                                    ARRAY[s]) IS NOT NULL;
END
$$;


-- metacloud_media_rows() ------------------------------------------------
-- The meta_cloud_media rows of media sub-objects (p_media, NULL or not an
-- object: none), side by side with their organisations and numbers: one
-- row per media id, its row's id, and whether this call made it (status
-- PENDING: the module queues it).  Meta media ids are global, so a media
-- id seen before (a retry through another number, a forwarded file, the
-- same id twice in the arrays) links to the existing row and is not
-- queued again.  metacloud_process_event() calls it for one message, a
-- batch of metacloud_ingest_group() (011) for all of its own.  Only
-- called from the functions of 003 and 011: no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_media_rows(p_orgs text[],
    p_phones text[], p_media jsonb[])
RETURNS TABLE (r_media_id text, r_id text, r_new boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    v_new  text[];
BEGIN
    WITH ins AS (
        INSERT INTO meta_cloud_media
               ("mediaId", "type", "mimeType", "sha256", "fileName",
                "caption", "downloadUrl", "voice", "animated",
                "organizationId", "phoneNumberId", "status",
                "createdAt", "updatedAt")
        SELECT d.md ->> 'mediaId', (d.md ->> 'type')::"MetaCloudMediaType",
               d.md ->> 'mimeType', d.md ->> 'sha256', d.md ->> 'fileName',
               d.md ->> 'caption', d.md ->> 'downloadUrl',
               (d.md ->> 'voice')::boolean, (d.md ->> 'animated')::boolean,
               d.org, d.phone, 'PENDING', now(), now()
          FROM unnest(p_orgs, p_phones, p_media) AS d(org, phone, md)
         WHERE jsonb_typeof(d.md) = 'object'
        ON CONFLICT ("mediaId") DO NOTHING
        RETURNING "mediaId")
    SELECT array_agg(ins."mediaId") INTO v_new FROM ins;

    -- a statement of its own: it sees the rows the one above made
    RETURN QUERY
        SELECT m."mediaId", m."id", (m."mediaId" = ANY (v_new)) IS TRUE
          FROM meta_cloud_media m
         WHERE m."mediaId" IN (SELECT d ->> 'mediaId' FROM unnest(p_media) d
                                WHERE jsonb_typeof(d) = 'object');
END
$$;


-- metacloud_message_rows() ----------------------------------------------
-- The meta_cloud_messages rows of message events, one per element of the
-- arrays (side by side) whose event id is not NULL:
-- metacloud_process_event() writes one, a batch of metacloud_ingest_group()
-- (011) all of its own in one statement.  Returns each row's id, number
-- and wamid, and whether it is new.  Two elements must not share a
-- (number, wamid): ON CONFLICT cannot update a row twice in one statement.
-- The sub-object's keys are the column names (docs/EVENTS.md): one
-- jsonb_populate_record() reads them all; every column the event must
-- not choose is set here, the rest stay NULL (leadId, conversationId,
-- ticketId, messageId, lastStatusUpdate).  One statement for all four
-- types: on a conflict,
--   history_media: the media of an earlier history placeholder is
--     attached to the placeholder's row (history chunks arrive in any
--     order: the row is created when the media came first);
--   the others: message events of one (scope, wamid) share their key,
--     so a row already here was made by a history_media event that came
--     first: keep its type and media, add what only the placeholder
--     knows.
-- p_hm: the events are history_media (see above); one value for the call.
-- Only called from the functions of 003 and 011: no search_path of its
-- own.

CREATE OR REPLACE FUNCTION metacloud_message_rows(p_hm boolean,
    p_orgs text[], p_event_ids text[], p_phones text[], p_media text[],
    p_evs jsonb[], p_leads text[], p_convs text[], p_tickets text[],
    p_msgs text[])
RETURNS TABLE (r_id text, r_phone text, r_wamid text, r_new boolean)
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY
    WITH ins AS (
        INSERT INTO meta_cloud_messages AS t
               ("id", "wamid", "organizationId", "webhookEventId",
                "phoneNumberId", "direction", "from", "to", "type", "text",
                "contactName", "contactWaId", "contextMessageId",
                "isForwarded", "forwardedCount", "mediaId", "locationLatitude",
                "locationLongitude", "locationName", "locationAddress",
                "interactiveType", "buttonPayload", "buttonText", "listId",
                "listTitle", "listDescription", "reactionEmoji",
                "reactionMessageId", "rawMessageData", "timestamp", "sentAt",
                "currentStatus", "createdAt", "updatedAt", "source",
                "fromUserId", "fromParentUserId", "toUserId", "groupId",
                "rawType", "unsupportedType", "contactUserId",
                "contactUsername", "contextFrom", "isFrequentlyForwarded",
                "referredProductCatalogId", "referredProductRetailerId",
                "locationUrl", "originalMessageId", "errorCode", "errorTitle",
                "referral", "historyStatus", "leadId", "conversationId",
                "ticketId", "messageId")
        SELECT metacloud_new_id(), j."wamid", d.org, d.event_id,
               d.phone, j."direction", j."from", j."to", j."type", j."text",
               j."contactName", j."contactWaId", j."contextMessageId",
               coalesce(j."isForwarded", false),
               coalesce(j."forwardedCount", 0), d.media,
               j."locationLatitude", j."locationLongitude", j."locationName",
               j."locationAddress", j."interactiveType", j."buttonPayload",
               j."buttonText", j."listId", j."listTitle", j."listDescription",
               j."reactionEmoji", j."reactionMessageId", d.ev -> 'payload',
               j."timestamp",
               coalesce(to_timestamp(
                            (d.ev -> 'message' ->> 'timestamp')::bigint),
                        now()),
               'PENDING', now(), now(), j."source",
               j."fromUserId", j."fromParentUserId", j."toUserId", j."groupId",
               j."rawType", j."unsupportedType", j."contactUserId",
               j."contactUsername", j."contextFrom",
               coalesce(j."isFrequentlyForwarded", false),
               j."referredProductCatalogId", j."referredProductRetailerId",
               j."locationUrl", j."originalMessageId", j."errorCode",
               j."errorTitle", j."referral", j."historyStatus", d.lead, d.conv,
               d.ticket, d.msg
          FROM unnest(p_orgs, p_event_ids, p_phones, p_media, p_evs, p_leads,
                      p_convs, p_tickets, p_msgs)
               AS d(org, event_id, phone, media, ev, lead, conv, ticket, msg),
               jsonb_populate_record(NULL::meta_cloud_messages,
                                     d.ev -> 'message') AS j
         WHERE d.event_id IS NOT NULL
        ON CONFLICT ("phoneNumberId", "wamid") DO UPDATE
           SET "mediaId" = CASE WHEN p_hm
                                THEN coalesce(excluded."mediaId", t."mediaId")
                                ELSE t."mediaId" END,
               "type" = CASE WHEN p_hm AND t."type" = 'MEDIA_PLACEHOLDER'
                             THEN excluded."type" ELSE t."type" END,
               "rawType" = CASE WHEN p_hm AND t."type" = 'MEDIA_PLACEHOLDER'
                                THEN excluded."rawType" ELSE t."rawType" END,
               "text" = CASE WHEN p_hm THEN coalesce(t."text", excluded."text")
                             ELSE t."text" END,
               "historyStatus" = CASE WHEN p_hm THEN t."historyStatus"
                   ELSE coalesce(t."historyStatus", excluded."historyStatus")
                   END,
               "contactName" = CASE WHEN p_hm THEN t."contactName"
                   ELSE coalesce(t."contactName", excluded."contactName") END,
               "contactWaId" = CASE WHEN p_hm THEN t."contactWaId"
                   ELSE coalesce(t."contactWaId", excluded."contactWaId") END,
               "contactUserId" = CASE WHEN p_hm THEN t."contactUserId"
                   ELSE coalesce(t."contactUserId", excluded."contactUserId")
                   END,
               "contactUsername" = CASE WHEN p_hm THEN t."contactUsername"
                   ELSE coalesce(t."contactUsername",
                                 excluded."contactUsername") END,
               "fromUserId" = CASE WHEN p_hm THEN t."fromUserId"
                   ELSE coalesce(t."fromUserId", excluded."fromUserId") END,
               "toUserId" = CASE WHEN p_hm THEN t."toUserId"
                   ELSE coalesce(t."toUserId", excluded."toUserId") END,
               "from" = coalesce(t."from", excluded."from"),
               "to" = coalesce(t."to", excluded."to"),
               "updatedAt" = now()
        RETURNING t."id", t."phoneNumberId", t."wamid", t."xmax" = 0
    )
    SELECT * FROM ins;
END
$$;


-- metacloud_process_event() ----------------------------------------------
-- Processes one stored event of a routed number: fills meta_cloud_media,
-- meta_cloud_messages, meta_cloud_message_statuses.  The caller runs it in
-- a sub-transaction and records the outcome on the event row:
--   outcome 'ok'       processed
--   outcome 'pending'  a status whose message is not known yet
-- media_id / meta_media_id: a media row this call created (status PENDING),
-- for the module's download queue.  Errors are raised.

CREATE OR REPLACE FUNCTION metacloud_process_event(p_event_id text,
    p_org text, p_ev jsonb,
    OUT outcome text, OUT media_id text, OUT meta_media_id text)
LANGUAGE plpgsql
AS $$
DECLARE
    v_type      text := p_ev ->> 'eventType';
    v_phone     text := coalesce(p_ev ->> 'phoneNumberId', p_ev ->> 'scope');
    m           jsonb := p_ev -> 'message';
    md          jsonb := p_ev -> 'media';
    v_hm        boolean := v_type = 'history_media';
    v_media_pk  text;
    v_media_new boolean;
    v_msg_id    text;
    v_new       boolean;
    b           record;
BEGIN
    outcome := 'ok';

    IF v_type = 'status' THEN
        IF NOT metacloud_apply_status(p_event_id, v_phone, p_ev -> 'status')
        THEN
            outcome := 'pending';
        END IF;
        RETURN;
    END IF;

    IF v_type = 'state_sync' THEN
        PERFORM metacloud_on_state_sync(p_org, v_phone, p_ev -> 'contact');
        RETURN;
    END IF;

    -- error, history_error, generic and any future type: the stored event
    -- is all there is to keep
    IF v_type NOT IN ('message', 'echo', 'history_message', 'history_media')
    THEN
        RETURN;
    END IF;

    IF jsonb_typeof(m) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% event without a message object', v_type;
    END IF;

    -- The media first: the message row references it
    -- (metacloud_media_rows(), above).
    IF jsonb_typeof(md) = 'object' THEN
        SELECT r.r_id, r.r_new INTO v_media_pk, v_media_new
          FROM metacloud_media_rows(ARRAY[p_org], ARRAY[v_phone], ARRAY[md])
               AS r;
        IF v_media_new THEN
            media_id := v_media_pk;
            meta_media_id := md ->> 'mediaId';
        END IF;
    END IF;

    -- The bridge's links when it can make them before the row (a new row,
    -- the default hooks: 004); else metacloud_on_message() below.
    b := metacloud_bridge_prepare(p_org, v_phone, p_ev);

    -- the row (metacloud_message_rows(), above)
    SELECT r.r_id, r.r_new INTO v_msg_id, v_new
      FROM metacloud_message_rows(v_hm, ARRAY[p_org], ARRAY[p_event_id],
               ARRAY[v_phone], ARRAY[v_media_pk], ARRAY[p_ev],
               ARRAY[b.lead_id], ARRAY[b.conversation_id],
               ARRAY[b.ticket_id], ARRAY[b.message_id]) AS r;

    -- a new row inside metacloud_ingest(), which bypasses the trigger
    -- below (its PL/pgSQL call per row cost more than the work): its
    -- waiting statuses
    IF v_new AND current_setting('metacloud.ingest', true) = 'on' THEN
        PERFORM metacloud_apply_pending(v_phone, m ->> 'wamid', p_org);
    END IF;

    IF NOT b.handled THEN
        PERFORM metacloud_on_message(v_msg_id);
    END IF;
END
$$;


-- Statuses that came before their message ------------------------------------
-- Meta does not order webhooks, and a status of an API-sent message can
-- arrive before the platform has recorded the message.  Such a status event
-- is kept unprocessed ("message not found"); when a message row appears,
-- by this module or by the platform's own INSERT, this trigger applies that
-- wamid's waiting statuses in the order they were received.  One probe of a
-- small partial index per new message.

CREATE OR REPLACE FUNCTION metacloud_apply_pending(p_phone text,
    p_wamid text, p_org text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    ev  record;
BEGIN
    -- the lock metacloud_apply_status() takes: a status event not
    -- committed yet is waited for, then seen by the query below
    PERFORM pg_advisory_xact_lock(hashtext(p_phone), hashtext(p_wamid));

    FOR ev IN
        SELECT w."id", w."event"
          FROM meta_cloud_webhook_events w
         WHERE w."scope" = p_phone
           AND ((w."event" -> 'status') ->> 'wamid') = p_wamid
           AND w."eventType" = 'status' AND NOT w."processed"
           AND NOT w."unrouted"
         ORDER BY w."receivedAt", w."webhookId"
           FOR UPDATE
    LOOP
        PERFORM metacloud_process_guarded(ev."id", p_org, ev."event", true);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION metacloud_apply_pending_statuses()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM metacloud_apply_pending(NEW."phoneNumberId", NEW."wamid",
                                    NEW."organizationId");
    RETURN NULL;
END
$$;

-- Not for the rows metacloud_ingest() inserts (it sets metacloud.ingest
-- for its call): metacloud_process_event() applies theirs itself.
CREATE OR REPLACE TRIGGER meta_cloud_messages_apply_pending_statuses
    AFTER INSERT ON meta_cloud_messages
    FOR EACH ROW
    WHEN (current_setting('metacloud.ingest', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION metacloud_apply_pending_statuses();


-- metacloud_route() ------------------------------------------------------
-- The organisation of a scope: by phone number id, or for account-level
-- fields ('waba:<id>') by the WABA of any of its registered numbers.
-- PL/pgSQL, so that its plans are cached: a SQL function that is not
-- inlined (a scalar subquery is not) is planned again on every call
-- (0.2 ms, more than the lookup).

CREATE OR REPLACE FUNCTION metacloud_route(p_scope text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_scope LIKE 'waba:%' THEN
        RETURN (SELECT c."organizationId" FROM "MetaWhatsAppCredential" c
                 WHERE c."wabaId" = substr(p_scope, 6)
                 ORDER BY c."id" LIMIT 1);
    END IF;
    RETURN (SELECT c."organizationId" FROM "MetaWhatsAppCredential" c
             WHERE c."phoneNumberId" = p_scope);
END
$$;


-- metacloud_process_guarded() -------------------------------------------
-- Processes one stored event in a sub-transaction and records the outcome
-- on its row: an error marks the event failed (processed false, error =
-- the message) and undoes only its rows; a status whose message is not
-- known yet waits ('message not found').  Errors that are not the event's
-- fault (deadlock, serialisation, lock timeout, out of resources, shutdown)
-- abort the whole call instead, so that the module answers 503 and Meta
-- retries.  p_mark_ok: also set processed = true on success (an event
-- stored unprocessed, as the replay has it).  Only called from the pinned
-- entry points: no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_process_guarded(p_event_id text,
    p_org text, p_ev jsonb, p_mark_ok boolean,
    OUT outcome text, OUT media_id text, OUT meta_media_id text)
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        SELECT p.outcome, p.media_id, p.meta_media_id
          INTO outcome, media_id, meta_media_id
          FROM metacloud_process_event(p_event_id, p_org, p_ev) p;
    EXCEPTION
        WHEN transaction_rollback OR lock_not_available
             OR insufficient_resources OR operator_intervention
             OR system_error THEN
            RAISE;
        WHEN OTHERS THEN
            UPDATE meta_cloud_webhook_events
               SET "processed" = false, "processedAt" = NULL,
                   "error" = SQLERRM, "updatedAt" = now()
             WHERE "id" = p_event_id;
            outcome := 'failed';
            media_id := NULL;
            meta_media_id := NULL;
            RETURN;
    END;

    IF outcome = 'pending' THEN
        UPDATE meta_cloud_webhook_events
           SET "processed" = false, "processedAt" = NULL,
               "error" = 'message not found', "updatedAt" = now()
         WHERE "id" = p_event_id;
    ELSIF p_mark_ok THEN
        UPDATE meta_cloud_webhook_events
           SET "processed" = true, "processedAt" = now(), "error" = NULL,
               "updatedAt" = now()
         WHERE "id" = p_event_id;
    END IF;
END
$$;


-- metacloud_replay_event() -----------------------------------------------
-- Processes again one stored event that is not processed: an unrouted
-- event whose number is now registered, a status still waiting for its
-- message, a failure whose cause was fixed.  An event is never processed
-- twice; one marked "invalid" by the parser stays failed.  Returns
-- 'ok' | 'pending' | 'failed' | 'unrouted' | 'invalid' | 'processed' |
-- 'missing'.

CREATE OR REPLACE FUNCTION metacloud_replay_event(p_event_id text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    w      meta_cloud_webhook_events;
    v_org  text;
    ev     jsonb;
    p      record;
BEGIN
    SELECT * INTO w FROM meta_cloud_webhook_events
     WHERE "id" = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'missing';
    END IF;
    IF w."processed" THEN
        RETURN 'processed';
    END IF;

    ev := coalesce(w."event", '{}') || jsonb_build_object('payload', w."payload");
    IF ev ? 'invalid' THEN
        RETURN 'invalid';
    END IF;

    v_org := coalesce(w."organizationId", metacloud_route(w."scope"));
    IF v_org IS NULL THEN
        RETURN 'unrouted';
    END IF;

    UPDATE meta_cloud_webhook_events
       SET "organizationId" = v_org, "unrouted" = false, "updatedAt" = now()
     WHERE "id" = w."id";

    p := metacloud_process_guarded(w."id", v_org, ev, true);
    RETURN p.outcome;
END
$$;


-- The module's role and its privileges -------------------------------------
-- LOGIN, no password set here (the administrator chooses the
-- authentication: ALTER ROLE ... PASSWORD, or a pg_hba.conf peer/cert rule).
-- It may execute two functions and nothing else; they are SECURITY DEFINER
-- and do the writing as the owner of the schema.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metacloud_module')
    THEN
        CREATE ROLE metacloud_module LOGIN;
    END IF;

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO metacloud_module',
                   current_schema());
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM metacloud_module',
                   current_schema());
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM metacloud_module',
                   current_schema());
END
$$;

-- Functions are executable by PUBLIC by default: not these.
REVOKE ALL ON FUNCTION metacloud_schema_version() FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_status_rank("MetaCloudMessageStatusEnum") FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_on_message(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_on_status(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_on_state_sync(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_prepare(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_apply_status(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_apply_statuses(text[], text[], jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_hooks_default(text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_process_event(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_media_rows(text[], text[], jsonb[])
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_message_rows(boolean, text[], text[], text[],
                                              text[], jsonb[], text[], text[],
                                              text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_process_guarded(text, text, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_apply_pending_statuses() FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_apply_pending(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_route(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_replay_event(text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION metacloud_schema_version() TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (3, 'metacloud_ingest')
ON CONFLICT (version) DO NOTHING;
