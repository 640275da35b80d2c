-- 004_metacloud_bridge.sql
--
-- The default bridge: every routed message, status and contact also shows
-- up in the platform's own tables ("Lead", "Conversation", "Ticket",
-- "Message", "CampaignRecipient"), inside the event's sub-transaction (an
-- error fails that event, never its siblings).  docs/SQL.md ("Bridge") is
-- the contract: the columns the defaults use and how to replace them.
--
-- Two kinds of functions, so that a platform's replacement survives a
-- re-run while fixes to the defaults still reach every database:
--
--   metacloud_bridge_default_*   the module's rules.  Always created with
--                                CREATE OR REPLACE: a later migration that
--                                fixes one reaches every database.  Never
--                                edit them in place.
--   metacloud_on_*, metacloud_bridge_<step>
--                                the hooks the module calls.  Created only
--                                when missing (or still the no-op of 003),
--                                as one-line calls of the default; a
--                                platform replaces any one of them (same
--                                signature), and may call the default from
--                                its version.  Never overwritten.
--
--   metacloud_register_outbound(...)   for the platform's sender (role
--                                      metacloud_platform)
--   metacloud_bridge_refresh()         after a platform added or dropped
--                                      an optional column (docs/SQL.md)

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


-- Reactions, edits and revokes that arrive before their target wait in
-- meta_cloud_messages; the target's bridge row picks them up.  Tiny: only
-- those three types have an entry.
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_change_target_idx"
    ON meta_cloud_messages
       ("phoneNumberId", (coalesce("reactionMessageId", "originalMessageId")))
    WHERE "type" IN ('REACTION', 'EDIT', 'REVOKE');


-- Optional columns ---------------------------------------------------------
-- A platform's own tables may lack some columns the defaults write.  Per
-- table, the optional columns are used only when all of them exist;
-- metacloud_bridge_has('Lead') says so.  It is an IMMUTABLE constant made
-- by metacloud_bridge_refresh(), folded into each cached plan: no catalog
-- lookup per call.  Run the refresh again after changing those columns.

CREATE OR REPLACE FUNCTION metacloud_bridge_refresh()
RETURNS text[]
LANGUAGE plpgsql
AS $$
DECLARE
    v_full  text[];
BEGIN
    SELECT coalesce(array_agg(o.tbl ORDER BY o.tbl), '{}') INTO v_full
      FROM (VALUES ('Lead', ARRAY['username', 'whatsappRemovedAt']),
                   ('Conversation', ARRAY['lastMessageAt', 'lastInboundAt']),
                   ('Message', ARRAY['leadId', 'type', 'sentAt', 'reaction',
                                     'editedAt', 'revokedAt']))
           AS o(tbl, cols)
     WHERE (SELECT count(*) FROM pg_attribute a
             WHERE a.attrelid = to_regclass(format('%I', o.tbl))
               AND a.attname = ANY (o.cols) AND NOT a.attisdropped)
           = cardinality(o.cols);

    EXECUTE format('CREATE OR REPLACE FUNCTION metacloud_bridge_has(t text)
                    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
                    AS %L', format('SELECT t = ANY (%L::text[])', v_full));
    EXECUTE 'REVOKE ALL ON FUNCTION metacloud_bridge_has(text) FROM PUBLIC';
    RETURN v_full;
END
$$;

SELECT metacloud_bridge_refresh();


-- metacloud_bridge_rank() ------------------------------------------------
-- metacloud_status_rank() of a text column: a value that is not a status
-- name (NULL, a platform's own word) ranks below PENDING, as the enum's
-- other labels do there.  The ranked names as a list, not enum_range()
-- and a cast to text[], which read the enum's labels on every call (3.9
-- us a row against 0.7, once for each status recorded).

CREATE OR REPLACE FUNCTION metacloud_bridge_rank(s text)
RETURNS int
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN s IN ('PENDING', 'SENT', 'FAILED', 'DELIVERED', 'READ',
                           'PLAYED')
                THEN metacloud_status_rank(s::"MetaCloudMessageStatusEnum")
                ELSE -1 END
$$;


-- metacloud_bridge_leads_of() ---------------------------------------------
-- A person's leads in an organisation: by phone, then by user id (a lead
-- with both comes twice; the callers take the first by "createdAt", "id").
-- Two lookups, each an equality on both columns of its index, and not one
-- OR: the generic plan of "phone = $2 OR userId = $3" made while "Lead" is
-- nearly empty reads every lead of the organisation (the (organizationId,
-- userId) index on the organisation alone, then a filter), and the pooled
-- sessions kept that plan until autovacuum's first ANALYZE: a fresh
-- database took text webhooks at a third of its speed.  A SQL function
-- called in FROM: the planner inlines it into the caller's query.  Its
-- body is not checked when it is created, as a PL/pgSQL body is not: a
-- platform's "Lead" may get the columns the defaults need ("Columns the
-- defaults use", docs/SQL.md) after this migration ran.

SET check_function_bodies = off;

CREATE OR REPLACE FUNCTION metacloud_bridge_leads_of(p_org text,
    p_phone text, p_user_id text)
RETURNS SETOF "Lead"
LANGUAGE sql STABLE
AS $$
    SELECT * FROM "Lead" x
     WHERE x."organizationId" = p_org AND x."phone" = p_phone
    UNION ALL
    SELECT * FROM "Lead" x
     WHERE x."organizationId" = p_org AND x."userId" = p_user_id
$$;

RESET check_function_bodies;


-- metacloud_bridge_lock_person() -----------------------------------------
-- Serialises the transactions that look up or create the lead of one
-- person: every key (phone, user id) is locked until commit, so a second
-- transaction looks again after the first committed.  The platform's tables
-- need no unique index for this.  One global order (phones, then user ids,
-- each sorted) keeps two transactions from taking them crosswise.
-- PL/pgSQL: a SQL function with a FROM clause is not inlined, and would be
-- planned again on every call.

CREATE OR REPLACE FUNCTION metacloud_bridge_lock_person(p_org text,
    p_phones text[], p_user_ids text[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    k  text;
BEGIN
    -- 'p|' sorts before 'u|': the order of metacloud_bridge_default_lead()
    FOREACH k IN ARRAY ARRAY(
        SELECT DISTINCT y
          FROM (SELECT 'p|' || x FROM unnest(p_phones) x
                UNION ALL
                SELECT 'u|' || x FROM unnest(p_user_ids) x) AS keys(y)
         WHERE y IS NOT NULL ORDER BY 1)
    LOOP
        PERFORM pg_advisory_xact_lock(
            hashtextextended('lead|' || p_org || '|' || k, 0));
    END LOOP;
END
$$;


-- Lead -----------------------------------------------------------------------
-- One per (organisation, person), found by phone or by user id; the missing
-- one is filled in, name and username follow the latest payload that has
-- them.  NULL when the payload names nobody.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_lead(p_org text,
    p_phone text, p_user_id text, p_name text, p_username text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_full  boolean := metacloud_bridge_has('Lead');
    l       jsonb;
    v_id    text;
BEGIN
    IF p_phone IS NULL AND p_user_id IS NULL THEN
        RETURN NULL;
    END IF;

    -- metacloud_bridge_lock_person() for one phone and one user id,
    -- without its arrays: this runs for every message
    IF p_phone IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtextextended('lead|' || p_org || '|p|' || p_phone, 0));
    END IF;
    IF p_user_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtextextended('lead|' || p_org || '|u|' || p_user_id, 0));
    END IF;

    -- as jsonb: a platform's table without "username" reads it as NULL
    SELECT to_jsonb(x) INTO l
      FROM metacloud_bridge_leads_of(p_org, p_phone, p_user_id) x
     ORDER BY x."createdAt", x."id" LIMIT 1;

    IF l IS NULL THEN
        v_id := metacloud_new_id();
        IF v_full THEN
            INSERT INTO "Lead" ("id", "organizationId", "phone", "userId",
                                "name", "username", "updatedAt")
            VALUES (v_id, p_org, p_phone, p_user_id, p_name, p_username,
                    now());
        ELSE
            INSERT INTO "Lead" ("id", "organizationId", "phone", "userId",
                                "name", "updatedAt")
            VALUES (v_id, p_org, p_phone, p_user_id, p_name, now());
        END IF;
        RETURN v_id;
    END IF;

    -- most messages change nothing: no write then
    v_id := l ->> 'id';
    IF (l ->> 'phone' IS NULL AND p_phone IS NOT NULL)
       OR (l ->> 'userId' IS NULL AND p_user_id IS NOT NULL)
       OR (p_name IS NOT NULL AND p_name IS DISTINCT FROM l ->> 'name')
       OR (v_full AND p_username IS NOT NULL
           AND p_username IS DISTINCT FROM l ->> 'username')
    THEN
        UPDATE "Lead"
           SET "phone" = coalesce("phone", p_phone),
               "userId" = coalesce("userId", p_user_id),
               "name" = coalesce(p_name, "name"),
               "updatedAt" = now()
         WHERE "id" = v_id;
        IF v_full AND p_username IS NOT NULL THEN
            UPDATE "Lead" SET "username" = p_username WHERE "id" = v_id;
        END IF;
    END IF;

    RETURN v_id;
END
$$;


-- Identity changes -----------------------------------------------------------
-- system user_changed_number / user_changed_user_id: the lead of the old
-- identity takes the new one (never a second lead).  Without a lead of the
-- old identity, the lead of the new one, else a new lead.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_identity(p_org text,
    p_old_phone text, p_old_user_id text, p_new_phone text,
    p_new_user_id text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_id  text;
BEGIN
    PERFORM metacloud_bridge_lock_person(p_org,
        ARRAY[p_old_phone, p_new_phone], ARRAY[p_old_user_id, p_new_user_id]);

    SELECT x."id" INTO v_id
      FROM metacloud_bridge_leads_of(p_org, p_old_phone, p_old_user_id) x
     ORDER BY x."createdAt", x."id" LIMIT 1;

    IF v_id IS NULL THEN
        RETURN metacloud_bridge_lead(p_org, p_new_phone, p_new_user_id,
                                     NULL, NULL);
    END IF;

    UPDATE "Lead"
       SET "phone" = coalesce(p_new_phone, "phone"),
           "userId" = coalesce(p_new_user_id, "userId"),
           "updatedAt" = now()
     WHERE "id" = v_id
       AND ("phone" IS DISTINCT FROM coalesce(p_new_phone, "phone")
            OR "userId" IS DISTINCT FROM coalesce(p_new_user_id, "userId"));

    RETURN v_id;
END
$$;


-- Conversation ---------------------------------------------------------------
-- One per (organisation, business number, lead).  "lastMessageAt" and, for
-- inbound messages, "lastInboundAt" only move forward: a late old message
-- does not move them back.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_conversation(p_org text,
    p_phone_number_id text, p_lead text, p_at timestamptz, p_inbound boolean)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_full  boolean := metacloud_bridge_has('Conversation');
    v_in    timestamptz := CASE WHEN p_inbound THEN p_at END;
    c       jsonb;
    v_id    text;
BEGIN
    -- the conversation and its ticket are found or made once per lead
    PERFORM pg_advisory_xact_lock(hashtextextended(
        'conv|' || p_org || '|' || p_phone_number_id || '|' || p_lead, 0));

    -- as jsonb: a platform's table without the times reads them as NULL
    SELECT to_jsonb(x) INTO c FROM "Conversation" x
     WHERE x."organizationId" = p_org
       AND x."phoneNumberId" = p_phone_number_id AND x."leadId" = p_lead
     ORDER BY x."createdAt", x."id" LIMIT 1;

    IF c IS NULL THEN
        v_id := metacloud_new_id();
        IF v_full THEN
            INSERT INTO "Conversation" ("id", "organizationId", "leadId",
                   "phoneNumberId", "lastMessageAt", "lastInboundAt",
                   "updatedAt")
            VALUES (v_id, p_org, p_lead, p_phone_number_id, p_at, v_in,
                    now());
        ELSE
            INSERT INTO "Conversation" ("id", "organizationId", "leadId",
                   "phoneNumberId", "updatedAt")
            VALUES (v_id, p_org, p_lead, p_phone_number_id, now());
        END IF;
        RETURN v_id;
    END IF;

    v_id := c ->> 'id';
    IF v_full
       AND (p_at > coalesce((c ->> 'lastMessageAt')::timestamptz, '-infinity')
            OR v_in > coalesce((c ->> 'lastInboundAt')::timestamptz,
                               '-infinity'))
    THEN
        UPDATE "Conversation"
           SET "lastMessageAt" = greatest("lastMessageAt", p_at),
               "lastInboundAt" = greatest("lastInboundAt", v_in),
               "updatedAt" = now()
         WHERE "id" = v_id;
    END IF;

    RETURN v_id;
END
$$;


-- Ticket ---------------------------------------------------------------------
-- The conversation's open ticket; p_open: open one when there is none
-- (inbound messages), else NULL (echoes, history).

CREATE OR REPLACE FUNCTION metacloud_bridge_default_ticket(p_org text,
    p_conversation text, p_open boolean)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_id  text;
BEGIN
    SELECT x."id" INTO v_id FROM "Ticket" x
     WHERE x."conversationId" = p_conversation AND x."status" = 'open'
     ORDER BY x."createdAt" DESC, x."id" LIMIT 1;

    IF v_id IS NULL AND p_open THEN
        v_id := metacloud_new_id();
        INSERT INTO "Ticket" ("id", "organizationId", "conversationId",
                              "status", "updatedAt")
        VALUES (v_id, p_org, p_conversation, 'open', now());
    END IF;

    RETURN v_id;
END
$$;


-- Message --------------------------------------------------------------------
-- The bridge row of a meta_cloud_messages row.  Called again for a row that
-- has one (a history placeholder and its media follow-up, in either
-- order): the row's type, text and historical status then complete it.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_message(
    m meta_cloud_messages, p_lead text, p_conversation text, p_ticket text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_full    boolean := metacloud_bridge_has('Message');
    v_status  text := m."currentStatus"::text;
    v_id      text := m."messageId";
BEGIN
    -- history: the status the message had in the app
    IF m."historyStatus" IS NOT NULL
       AND metacloud_bridge_rank(upper(m."historyStatus"))
           > metacloud_bridge_rank(v_status)
    THEN
        v_status := upper(m."historyStatus");
    END IF;

    IF v_id IS NOT NULL THEN
        IF v_full THEN
            UPDATE "Message"
               SET "type" = m."rawType", "body" = coalesce("body", m."text"),
                   "status" = CASE WHEN metacloud_bridge_rank("status")
                                        < metacloud_bridge_rank(v_status)
                                   THEN v_status ELSE "status" END,
                   "updatedAt" = now()
             WHERE "id" = v_id;
        ELSE
            UPDATE "Message"
               SET "body" = coalesce("body", m."text"),
                   "status" = CASE WHEN metacloud_bridge_rank("status")
                                        < metacloud_bridge_rank(v_status)
                                   THEN v_status ELSE "status" END,
                   "updatedAt" = now()
             WHERE "id" = v_id;
        END IF;
        RETURN v_id;
    END IF;

    v_id := metacloud_new_id();
    IF v_full THEN
        INSERT INTO "Message" ("id", "organizationId", "conversationId",
               "ticketId", "leadId", "direction", "type", "body", "status",
               "sentAt", "updatedAt")
        VALUES (v_id, m."organizationId", p_conversation, p_ticket, p_lead,
                m."direction"::text, m."rawType", m."text", v_status,
                m."sentAt", now());
    ELSE
        INSERT INTO "Message" ("id", "organizationId", "conversationId",
               "ticketId", "direction", "body", "status", "updatedAt")
        VALUES (v_id, m."organizationId", p_conversation, p_ticket,
                m."direction"::text, m."text", v_status, now());
    END IF;
    RETURN v_id;
END
$$;


-- Reactions, edits, revokes ----------------------------------------------------
-- Change their target's bridge row (p_target, "Message"."id") instead of
-- making one: the reaction's emoji (NULL: removed), the edit's text and
-- time, the revoke's time.  Nothing is deleted; the meta_cloud_messages
-- rows stay as history.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_change(
    m meta_cloud_messages, p_target text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_target IS NULL THEN
        RETURN;
    END IF;

    IF m."type" = 'EDIT' THEN
        IF metacloud_bridge_has('Message') THEN
            UPDATE "Message"
               SET "body" = m."text", "editedAt" = m."sentAt",
                   "updatedAt" = now()
             WHERE "id" = p_target;
        ELSE
            UPDATE "Message" SET "body" = m."text", "updatedAt" = now()
             WHERE "id" = p_target;
        END IF;
    ELSIF NOT metacloud_bridge_has('Message') THEN
        RETURN;
    ELSIF m."type" = 'REACTION' THEN
        UPDATE "Message" SET "reaction" = m."reactionEmoji", "updatedAt" = now()
         WHERE "id" = p_target;
    ELSIF m."type" = 'REVOKE' THEN
        UPDATE "Message" SET "revokedAt" = m."sentAt", "updatedAt" = now()
         WHERE "id" = p_target;
    END IF;
END
$$;


-- Statuses -------------------------------------------------------------------
-- "Message"."status" (p_message, may be NULL) and the campaign recipient of
-- the wamid follow meta_cloud_messages "currentStatus" (p_status): never
-- down the ladder of metacloud_status_rank().

CREATE OR REPLACE FUNCTION metacloud_bridge_default_status(p_org text,
    p_message text, p_wamid text, p_status text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_rank  int := metacloud_bridge_rank(p_status);
BEGIN
    IF p_message IS NOT NULL THEN
        UPDATE "Message" SET "status" = p_status, "updatedAt" = now()
         WHERE "id" = p_message AND metacloud_bridge_rank("status") < v_rank;
    END IF;

    UPDATE "CampaignRecipient" SET "status" = p_status, "updatedAt" = now()
     WHERE "wamid" = p_wamid AND "organizationId" = p_org
       AND metacloud_bridge_rank("status") < v_rank;
END
$$;


-- Contacts of the business app (smb_app_state_sync) ---------------------------
-- add / edit: the contact becomes (or updates) a lead, and a lead removed
-- earlier is back; remove: "whatsappRemovedAt" is set, nothing is deleted.

CREATE OR REPLACE FUNCTION metacloud_bridge_default_contact(p_org text,
    p_phone_number_id text, c jsonb)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_phone  text := c ->> 'phoneNumber';
    v_uid    text := c ->> 'userId';
    v_id     text;
BEGIN
    IF c ->> 'action' = 'remove' THEN
        PERFORM metacloud_bridge_lock_person(p_org, ARRAY[v_phone],
                                             ARRAY[v_uid]);
        SELECT x."id" INTO v_id
          FROM metacloud_bridge_leads_of(p_org, v_phone, v_uid) x
         ORDER BY x."createdAt", x."id" LIMIT 1;
        IF v_id IS NOT NULL AND metacloud_bridge_has('Lead') THEN
            UPDATE "Lead"
               SET "whatsappRemovedAt" = coalesce(
                       to_timestamp((c ->> 'timestamp')::bigint), now()),
                   "updatedAt" = now()
             WHERE "id" = v_id;
        END IF;
        RETURN v_id;
    END IF;

    v_id := metacloud_bridge_lead(p_org, v_phone, v_uid, c ->> 'name',
                                  c ->> 'username');
    IF v_id IS NOT NULL AND metacloud_bridge_has('Lead') THEN
        UPDATE "Lead" SET "whatsappRemovedAt" = NULL, "updatedAt" = now()
         WHERE "id" = v_id AND "whatsappRemovedAt" IS NOT NULL;
    END IF;
    RETURN v_id;
END
$$;


-- The hooks' defaults: the order of the steps ---------------------------------

CREATE OR REPLACE FUNCTION metacloud_bridge_default_on_message(
    p_message_id text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    m         meta_cloud_messages;
    c         meta_cloud_messages;
    v_in      boolean;
    v_change  boolean;
    v_phone   text;
    v_uid     text;
    v_sys     jsonb;
    v_target  text;
    v_lead    text;
    v_conv    text;
    v_ticket  text;
    v_msg     text;
BEGIN
    SELECT * INTO m FROM meta_cloud_messages WHERE "id" = p_message_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF m."messageId" IS NOT NULL THEN
        PERFORM metacloud_bridge_message(m, m."leadId", m."conversationId",
                                         m."ticketId");
        RETURN;
    END IF;

    -- the person: the sender of an inbound message, the recipient of an
    -- outbound one; else the matched contact (history: the thread)
    v_in := m."direction" = 'INBOUND';
    IF v_in THEN
        v_phone := coalesce(m."from", m."contactWaId");
        v_uid := coalesce(m."fromUserId", m."contactUserId");
    ELSE
        v_phone := coalesce(m."to", m."contactWaId");
        v_uid := coalesce(m."toUserId", m."contactUserId");
    END IF;

    v_change := m."type" IN ('REACTION', 'EDIT', 'REVOKE');
    IF v_change THEN
        v_target := coalesce(m."reactionMessageId", m."originalMessageId");
        -- the lock of the target's insertion (003): a target committing at
        -- the same moment is waited for, then seen, or sees this row.
        -- Taken before the person's locks, which the target's transaction
        -- takes after its own: never crosswise.
        PERFORM pg_advisory_xact_lock(hashtext(m."phoneNumberId"),
                                      hashtext(v_target));
    END IF;

    IF m."type" = 'SYSTEM' THEN
        v_sys := m."rawMessageData" -> 'system';
        IF v_sys ->> 'type' IN ('user_changed_number', 'user_changed_user_id')
        THEN
            v_lead := metacloud_bridge_identity(m."organizationId",
                          v_phone, v_uid,
                          coalesce(v_sys ->> 'wa_id', v_phone),
                          coalesce(v_sys ->> 'user_id', v_uid));
        END IF;
    END IF;

    IF v_lead IS NULL THEN
        v_lead := metacloud_bridge_lead(m."organizationId", v_phone, v_uid,
                                        m."contactName", m."contactUsername");
    END IF;
    IF v_lead IS NULL THEN
        -- nobody named (no phone, no user id): nothing to attach it to
        RETURN;
    END IF;

    v_conv := metacloud_bridge_conversation(m."organizationId",
                  m."phoneNumberId", v_lead, m."sentAt", v_in);
    -- only a customer's new message opens a ticket
    v_ticket := metacloud_bridge_ticket(m."organizationId", v_conv,
                    v_in AND m."source" = 'webhook' AND NOT v_change
                    AND m."type" <> 'SYSTEM');

    IF v_change THEN
        PERFORM metacloud_bridge_change(m, (
            SELECT t."messageId" FROM meta_cloud_messages t
             WHERE t."phoneNumberId" = m."phoneNumberId"
               AND t."wamid" = v_target));
    ELSE
        v_msg := metacloud_bridge_message(m, v_lead, v_conv, v_ticket);

        -- changes that came before their target, in their order
        FOR c IN
            SELECT * FROM meta_cloud_messages x
             WHERE x."phoneNumberId" = m."phoneNumberId"
               AND coalesce(x."reactionMessageId", x."originalMessageId")
                   = m."wamid"
               AND x."type" IN ('REACTION', 'EDIT', 'REVOKE')
             ORDER BY x."sentAt", x."createdAt", x."id"
        LOOP
            PERFORM metacloud_bridge_change(c, v_msg);
        END LOOP;
    END IF;

    UPDATE meta_cloud_messages
       SET "leadId" = v_lead, "conversationId" = v_conv,
           "ticketId" = v_ticket, "messageId" = v_msg, "updatedAt" = now()
     WHERE "id" = m."id";
END
$$;

-- metacloud_bridge_plain(), _phone(), _user() ----------------------------
-- Of a message event's sub-object (jsonb): whether the fast path below
-- takes it (not a reaction, edit, revoke or system message), and its
-- person as metacloud_bridge_default_on_message() finds it in the row:
-- the sender of an inbound message, the recipient of an outbound one, else
-- the matched contact.  SQL expressions, inlined where they are used (the
-- fast path's two forms, and the batches of 011).

CREATE OR REPLACE FUNCTION metacloud_bridge_plain(m jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(m ->> 'type' NOT IN ('REACTION', 'EDIT', 'REVOKE',
                                         'SYSTEM'), true)
$$;

CREATE OR REPLACE FUNCTION metacloud_bridge_phone(m jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN m ->> 'direction' = 'INBOUND'
                THEN coalesce(m ->> 'from', m ->> 'contactWaId')
                ELSE coalesce(m ->> 'to', m ->> 'contactWaId') END
$$;

CREATE OR REPLACE FUNCTION metacloud_bridge_user(m jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN m ->> 'direction' = 'INBOUND'
                THEN coalesce(m ->> 'fromUserId', m ->> 'contactUserId')
                ELSE coalesce(m ->> 'toUserId', m ->> 'contactUserId') END
$$;


-- metacloud_bridge_fast() ------------------------------------------------
-- Whether the fast path below may run: the tables have the optional
-- columns, and every hook a new message goes through is still the one 004
-- made (metacloud_hooks_default(), 003: read when the expression below is
-- planned, the cached plan depending on the hooks it names).

CREATE OR REPLACE FUNCTION metacloud_bridge_fast()
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_never  boolean := false;      -- metacloud_hooks_default() of 003
BEGIN
    RETURN metacloud_bridge_has('Lead')
           AND metacloud_bridge_has('Conversation')
           AND metacloud_bridge_has('Message')
           AND ((v_never
                 AND metacloud_on_message(NULL::text) IS NULL
                 AND metacloud_bridge_lead(NULL::text, NULL::text,
                                           NULL::text, NULL::text,
                                           NULL::text) IS NULL
                 AND metacloud_bridge_conversation(NULL::text, NULL::text,
                         NULL::text, NULL::timestamptz, NULL::boolean)
                     IS NULL
                 AND metacloud_bridge_ticket(NULL::text, NULL::text,
                                             NULL::boolean) IS NULL
                 AND metacloud_bridge_message(NULL::meta_cloud_messages,
                         NULL::text, NULL::text, NULL::text) IS NULL
                 AND metacloud_bridge_change(NULL::meta_cloud_messages,
                                             NULL::text) IS NULL)
                OR metacloud_hooks_default(
                       ARRAY['metacloud_on_message', 'metacloud_bridge_lead',
                             'metacloud_bridge_conversation',
                             'metacloud_bridge_ticket',
                             'metacloud_bridge_message',
                             'metacloud_bridge_change'],
                       ARRAY['SELECT metacloud_bridge_default_on_message($1)',
                             'SELECT metacloud_bridge_default_lead'
                             '($1, $2, $3, $4, $5)',
                             'SELECT metacloud_bridge_default_conversation'
                             '($1, $2, $3, $4, $5)',
                             'SELECT metacloud_bridge_default_ticket'
                             '($1, $2, $3)',
                             'SELECT metacloud_bridge_default_message'
                             '($1, $2, $3, $4)',
                             'SELECT metacloud_bridge_default_change'
                             '($1, $2)']));
END
$$;

-- The fast path ----------------------------------------------------------
-- metacloud_process_event() (003) calls metacloud_bridge_prepare() before
-- it inserts a message row, and a batch of metacloud_ingest_group() (011)
-- calls metacloud_bridge_prepare_set() for all of its messages at once:
-- for a new row while the hooks a message runs through are still the
-- defaults, it does what metacloud_bridge_default_on_message() would do
-- after the insert, and returns the links, which go into the row's
-- INSERT: no read back, no UPDATE of meta_cloud_messages (which cannot be
-- HOT: the link columns are indexed).  A brand-new lead has no
-- conversation, a brand-new conversation no ticket: no lookup for them.
-- handled false (a hook replaced, an optional column missing, a row that
-- exists, a reaction, edit, revoke or system message): the caller runs
-- metacloud_on_message() after the insert, the per-step path.  The hooks
-- are checked on every call, so a platform's replacement counts at once.
--
-- The set form takes message events (p_evs) of their numbers (p_numbers)
-- and organisations (p_orgs) side by side, and returns a row for each, in
-- their order (an element without organisation: handled false, nothing
-- done).  Its statements serve every element at once: the locks in
-- the order of the elements (the caller's order of people), then one
-- lookup, then the writes as one statement (the foreign keys are checked
-- at its end).  Two elements of one person, or two that find one lead,
-- would race each other inside the statements: that raises, and a batch
-- then writes its deliveries one by one (011).  Two forms of one rule,
-- because for a single message the set form's statements cost more than
-- the rows (pgbench, one text message a call: 2,086-2,115 us of backend
-- CPU a delivery against 1,507-1,672 with the single form); a message
-- outside a batch (alone, or one of a delivery's several events) takes
-- the single form.

CREATE OR REPLACE FUNCTION metacloud_bridge_prepare_set(p_orgs text[],
    p_numbers text[], p_evs jsonb[])
RETURNS TABLE (handled boolean, lead_id text, conversation_id text,
               ticket_id text, message_id text)
LANGUAGE plpgsql
AS $$
DECLARE
    a_ok      boolean[];    -- a type the fast path takes
    a_wamid   text[];
    a_phone   text[];       -- the person
    a_uid     text[];
    a_at      timestamptz[];
    a_in      boolean[];
    a_open    boolean[];    -- may open a ticket
    a_done    boolean[];    -- handled
    a_new     boolean[];    -- a new lead
    a_old     boolean[];    -- a lead found
    a_lead    text[];
    a_conv    text[];
    a_ticket  text[];
    a_msg     text[];
    a_cnew    boolean[];    -- a conversation to insert
    a_cupd    boolean[];    -- a conversation to move forward
    a_tnew    boolean[];    -- a ticket to insert
    n_old     int;
    r         record;
BEGIN
    IF NOT metacloud_bridge_fast() THEN
        RETURN QUERY SELECT false, NULL::text, NULL::text, NULL::text,
                            NULL::text
                       FROM unnest(p_evs);
        RETURN;
    END IF;

    -- the person, as metacloud_bridge_default_on_message() finds it
    SELECT array_agg(x.ok ORDER BY d.k), array_agg(j ->> 'wamid' ORDER BY d.k),
           array_agg(CASE WHEN x.ok THEN x.phone END ORDER BY d.k),
           array_agg(CASE WHEN x.ok THEN x.uid END ORDER BY d.k),
           array_agg(coalesce(to_timestamp((j ->> 'timestamp')::bigint),
                              now()) ORDER BY d.k),
           array_agg(x.inbound ORDER BY d.k),
           -- only a customer's new message opens a ticket
           array_agg(x.inbound AND j ->> 'source' = 'webhook' ORDER BY d.k)
      INTO a_ok, a_wamid, a_phone, a_uid, a_at, a_in, a_open
      FROM unnest(p_evs, p_orgs) WITH ORDINALITY AS d(e, org, k),
           LATERAL (SELECT d.e -> 'message') AS m(j),
           LATERAL (SELECT d.org IS NOT NULL AND jsonb_typeof(j) = 'object'
                           AND metacloud_bridge_plain(j),
                           j ->> 'direction' = 'INBOUND',
                           metacloud_bridge_phone(j),
                           metacloud_bridge_user(j))
           AS x(ok, inbound, phone, uid);

    -- In one statement, for each element in turn: the lock of the row's
    -- insertion (the trigger of 003 takes it again: a row of this wamid
    -- committing now is waited for, then seen), then the person's keys as
    -- metacloud_bridge_default_lead() takes them (a NULL key: no lock).
    PERFORM pg_advisory_xact_lock(hashtext(d.num), hashtext(d.wamid)),
            pg_advisory_xact_lock(hashtextextended(
                'lead|' || d.org || '|p|' || d.phone, 0)),
            pg_advisory_xact_lock(hashtextextended(
                'lead|' || d.org || '|u|' || d.uid, 0))
       FROM unnest(p_orgs, p_numbers, a_wamid, a_phone, a_uid, a_ok)
            AS d(org, num, wamid, phone, uid, ok)
      WHERE d.ok;

    -- In one statement, after the locks (its snapshot sees what the
    -- holders committed): is the row here already, and the person's lead
    -- (metacloud_bridge_default_lead()); the ids of what may be made
    SELECT array_agg(h.done ORDER BY d.k),
           array_agg(y.named AND l."id" IS NULL ORDER BY d.k),
           array_agg(y.named AND l."id" IS NOT NULL ORDER BY d.k),
           array_agg(CASE WHEN y.named
                          THEN coalesce(l."id", metacloud_new_id()) END
                     ORDER BY d.k),
           array_agg(CASE WHEN y.named THEN metacloud_new_id() END
                     ORDER BY d.k),
           array_agg(CASE WHEN y.named AND d.open THEN metacloud_new_id() END
                     ORDER BY d.k),
           array_agg(CASE WHEN y.named THEN metacloud_new_id() END
                     ORDER BY d.k),
           count(*) FILTER (WHERE y.named AND l."id" IS NOT NULL)
      INTO a_done, a_new, a_old, a_lead, a_conv, a_ticket, a_msg, n_old
      FROM unnest(p_orgs, p_numbers, a_wamid, a_phone, a_uid, a_ok, a_open)
           WITH ORDINALITY AS d(org, num, wamid, phone, uid, ok, open, k)
      LEFT JOIN LATERAL (
           SELECT x."id"
             FROM metacloud_bridge_leads_of(d.org, d.phone, d.uid) x
            WHERE d.ok
            ORDER BY x."createdAt", x."id" LIMIT 1) AS l ON true
     CROSS JOIN LATERAL (
           SELECT d.ok AND NOT EXISTS (SELECT FROM meta_cloud_messages x
                                        WHERE x."phoneNumberId" = d.num
                                          AND x."wamid" = d.wamid)) AS h(done)
     CROSS JOIN LATERAL (
           SELECT h.done AND (d.phone IS NOT NULL OR d.uid IS NOT NULL))
           AS y(named);

    -- two elements of one person or one lead (see above)
    IF cardinality(p_evs) > 1
       AND (SELECT count(DISTINCT x.phone) < count(x.phone)
                   OR count(DISTINCT x.uid) < count(x.uid)
                   OR count(DISTINCT x.lead) < count(x.lead)
              FROM unnest(a_done, a_phone, a_uid, a_lead)
                   AS x(done, phone, uid, lead)
             WHERE x.done)
    THEN
        RAISE EXCEPTION 'metacloud_bridge_prepare_set(): two messages of '
                        'one person';
    END IF;

    a_cnew := a_new;
    a_cupd := NULL;
    a_tnew := ARRAY(SELECT x.n AND x.t IS NOT NULL
                      FROM unnest(a_new, a_ticket) AS x(n, t));

    IF n_old > 0 THEN
        -- a known person: the lead's missing keys, its name
        -- (metacloud_bridge_default_lead())
        UPDATE "Lead" AS l
           SET "phone" = coalesce(l."phone", d.phone),
               "userId" = coalesce(l."userId", d.uid),
               "name" = coalesce(d.name, l."name"),
               "username" = coalesce(d.usr, l."username"),
               "updatedAt" = now()
          FROM (SELECT x.*, x.e -> 'message' ->> 'contactName' AS name,
                       x.e -> 'message' ->> 'contactUsername' AS usr
                  FROM unnest(a_old, a_lead, a_phone, a_uid, p_evs)
                       AS x(old, lead, phone, uid, e)) AS d
         WHERE d.old AND l."id" = d.lead
           AND ((l."phone" IS NULL AND d.phone IS NOT NULL)
                OR (l."userId" IS NULL AND d.uid IS NOT NULL)
                OR (d.name IS NOT NULL AND d.name IS DISTINCT FROM l."name")
                OR (d.usr IS NOT NULL
                    AND d.usr IS DISTINCT FROM l."username"));

        -- Conversation: metacloud_bridge_default_conversation()
        PERFORM pg_advisory_xact_lock(hashtextextended(
                    'conv|' || d.org || '|' || d.num || '|' || d.lead, 0))
           FROM unnest(p_orgs, p_numbers, a_lead, a_old)
                AS d(org, num, lead, old)
          WHERE d.old;

        -- its conversation, and that one's open ticket
        -- (metacloud_bridge_default_ticket()); a new one where none is
        SELECT array_agg(d.old AND c."id" IS NULL OR d.new ORDER BY d.k),
               array_agg(c."id" IS NOT NULL
                         AND (d.at > coalesce(c."lastMessageAt", '-infinity')
                              OR (d.inbound AND d.at > coalesce(
                                      c."lastInboundAt", '-infinity')))
                         ORDER BY d.k),
               array_agg(coalesce(c."id", d.conv) ORDER BY d.k),
               array_agg(coalesce(t."id", d.ticket) ORDER BY d.k),
               array_agg(t."id" IS NULL AND d.ticket IS NOT NULL
                         AND (d.old OR d.new) ORDER BY d.k)
          INTO a_cnew, a_cupd, a_conv, a_ticket, a_tnew
          FROM unnest(p_orgs, p_numbers, a_lead, a_old, a_new, a_conv,
                      a_ticket, a_at, a_in)
               WITH ORDINALITY
               AS d(org, num, lead, old, new, conv, ticket, at, inbound, k)
          LEFT JOIN LATERAL (
               SELECT x."id", x."lastMessageAt", x."lastInboundAt"
                 FROM "Conversation" x
                WHERE d.old AND x."organizationId" = d.org
                  AND x."phoneNumberId" = d.num AND x."leadId" = d.lead
                ORDER BY x."createdAt", x."id" LIMIT 1) AS c ON true
          LEFT JOIN LATERAL (
               SELECT x."id" FROM "Ticket" x
                WHERE x."conversationId" = c."id" AND x."status" = 'open'
                ORDER BY x."createdAt" DESC, x."id" LIMIT 1) AS t ON true;
    END IF;

    -- What is new, in one statement: leads, conversations (and the known
    -- ones moved forward), tickets, and every message's "Message"
    -- (metacloud_bridge_default_message() for a new row)
    WITH d AS (
        SELECT x.*
          FROM unnest(p_orgs, p_numbers, p_evs, a_phone, a_uid, a_at, a_in,
                      a_new, a_cnew, a_cupd, a_tnew, a_lead, a_conv, a_ticket,
                      a_msg)
               AS x(org, num, e, phone, uid, at, inbound, new, cnew, cupd,
                    tnew, lead, conv, ticket, msg)
         WHERE x.msg IS NOT NULL),
    nl AS (
        INSERT INTO "Lead" ("id", "organizationId", "phone", "userId",
                            "name", "username", "updatedAt")
        SELECT d.lead, d.org, d.phone, d.uid,
               d.e -> 'message' ->> 'contactName',
               d.e -> 'message' ->> 'contactUsername', now()
          FROM d WHERE d.new),
    nc AS (
        INSERT INTO "Conversation" ("id", "organizationId", "leadId",
               "phoneNumberId", "lastMessageAt", "lastInboundAt",
               "updatedAt")
        SELECT d.conv, d.org, d.lead, d.num, d.at,
               CASE WHEN d.inbound THEN d.at END, now()
          FROM d WHERE d.cnew),
    uc AS (
        UPDATE "Conversation" AS x
           SET "lastMessageAt" = greatest(x."lastMessageAt", d.at),
               "lastInboundAt" = greatest(x."lastInboundAt",
                   CASE WHEN d.inbound THEN d.at END),
               "updatedAt" = now()
          FROM d
         WHERE d.cupd AND x."id" = d.conv),
    nt AS (
        INSERT INTO "Ticket" ("id", "organizationId", "conversationId",
                              "status", "updatedAt")
        SELECT d.ticket, d.org, d.conv, 'open', now()
          FROM d WHERE d.tnew)
    INSERT INTO "Message" ("id", "organizationId", "conversationId",
           "ticketId", "leadId", "direction", "type", "body", "status",
           "sentAt", "updatedAt")
    SELECT d.msg, d.org, d.conv, d.ticket, d.lead,
           d.e -> 'message' ->> 'direction', d.e -> 'message' ->> 'rawType',
           d.e -> 'message' ->> 'text',
           -- history: the status the message had in the app
           CASE WHEN metacloud_bridge_rank(upper(d.e -> 'message'
                                                 ->> 'historyStatus'))
                     > metacloud_bridge_rank('PENDING')
                THEN upper(d.e -> 'message' ->> 'historyStatus')
                ELSE 'PENDING' END,
           d.at, now()
      FROM d;

    -- changes that came before their target, in their order
    FOR r IN
        SELECT x AS c, d.msg
          FROM unnest(p_numbers, a_wamid, a_msg) WITH ORDINALITY
               AS d(num, wamid, msg, k)
          JOIN meta_cloud_messages x
            ON x."phoneNumberId" = d.num
           AND coalesce(x."reactionMessageId", x."originalMessageId")
               = d.wamid
           AND x."type" IN ('REACTION', 'EDIT', 'REVOKE')
         WHERE d.msg IS NOT NULL
         ORDER BY d.k, x."sentAt", x."createdAt", x."id"
    LOOP
        PERFORM metacloud_bridge_default_change(r.c, r.msg);
    END LOOP;

    RETURN QUERY
        SELECT x.done, x.lead, x.conv, x.ticket, x.msg
          FROM unnest(a_done, a_lead, a_conv, a_ticket, a_msg)
               WITH ORDINALITY AS x(done, lead, conv, ticket, msg, k)
         ORDER BY x.k;
END
$$;

CREATE OR REPLACE FUNCTION metacloud_bridge_prepare(p_org text,
    p_phone text, p_ev jsonb, OUT handled boolean, OUT lead_id text,
    OUT conversation_id text, OUT ticket_id text, OUT message_id text)
LANGUAGE plpgsql
AS $$
DECLARE
    j        jsonb := p_ev -> 'message';
    v_wamid  text := j ->> 'wamid';
    v_in     boolean := j ->> 'direction' = 'INBOUND';
    v_at     timestamptz := coalesce(to_timestamp((j ->> 'timestamp')::bigint),
                                     now());
    v_phone  text;
    v_uid    text;
    v_name   text := j ->> 'contactName';
    v_user   text := j ->> 'contactUsername';
    v_status text := 'PENDING';
    -- only a customer's new message opens a ticket
    v_open   boolean := v_in AND j ->> 'source' = 'webhook';
    v_here   boolean;
    l_phone  text;
    l_uid    text;
    l_name   text;
    l_user   text;
    cv       record;
    c        meta_cloud_messages;
BEGIN
    handled := false;
    IF NOT metacloud_bridge_plain(j) OR NOT metacloud_bridge_fast() THEN
        RETURN;
    END IF;

    v_phone := metacloud_bridge_phone(j);
    v_uid := metacloud_bridge_user(j);

    -- In one statement, in this order: the lock of the row's insertion
    -- (the trigger of 003 takes it again: a row of this wamid committing
    -- now is waited for, then seen), then the person's keys as
    -- metacloud_bridge_default_lead() takes them (a NULL key: no lock).
    PERFORM pg_advisory_xact_lock(hashtext(p_phone), hashtext(v_wamid)),
            pg_advisory_xact_lock(hashtextextended(
                'lead|' || p_org || '|p|' || v_phone, 0)),
            pg_advisory_xact_lock(hashtextextended(
                'lead|' || p_org || '|u|' || v_uid, 0));
    -- In one statement, after the locks (its snapshot sees what the
    -- holders committed): is the row here already, and the person's lead
    -- (metacloud_bridge_default_lead()).
    SELECT EXISTS (SELECT FROM meta_cloud_messages x
                    WHERE x."phoneNumberId" = p_phone
                      AND x."wamid" = v_wamid),
           l."id", l."phone", l."userId", l."name", l."username"
      INTO v_here, lead_id, l_phone, l_uid, l_name, l_user
      FROM (SELECT) AS one
      LEFT JOIN LATERAL (
           SELECT x."id", x."phone", x."userId", x."name", x."username"
             FROM metacloud_bridge_leads_of(p_org, v_phone, v_uid) x
            ORDER BY x."createdAt", x."id" LIMIT 1) AS l ON true;
    IF v_here THEN
        lead_id := NULL;
        RETURN;
    END IF;
    handled := true;
    IF v_phone IS NULL AND v_uid IS NULL THEN
        RETURN;
    END IF;

    -- history: the status the message had in the app
    IF j ->> 'historyStatus' IS NOT NULL
       AND metacloud_bridge_rank(upper(j ->> 'historyStatus'))
           > metacloud_bridge_rank(v_status)
    THEN
        v_status := upper(j ->> 'historyStatus');
    END IF;
    message_id := metacloud_new_id();

    IF lead_id IS NULL THEN
        -- a new person: nobody else can see the lead before the commit,
        -- so no conversation or ticket to look for, and no lock for them;
        -- lead, conversation and ticket in one statement (the foreign keys
        -- are checked at its end)
        lead_id := metacloud_new_id();
        conversation_id := metacloud_new_id();
        IF v_open THEN
            ticket_id := metacloud_new_id();
        END IF;
        WITH nl AS (
            INSERT INTO "Lead" ("id", "organizationId", "phone", "userId",
                                "name", "username", "updatedAt")
            VALUES (lead_id, p_org, v_phone, v_uid, v_name, v_user, now())),
        nc AS (
            INSERT INTO "Conversation" ("id", "organizationId", "leadId",
                   "phoneNumberId", "lastMessageAt", "lastInboundAt",
                   "updatedAt")
            VALUES (conversation_id, p_org, lead_id, p_phone, v_at,
                    CASE WHEN v_in THEN v_at END, now()))
        INSERT INTO "Ticket" ("id", "organizationId", "conversationId",
                              "status", "updatedAt")
        SELECT ticket_id, p_org, conversation_id, 'open', now()
         WHERE ticket_id IS NOT NULL;
    ELSE
        IF (l_phone IS NULL AND v_phone IS NOT NULL)
           OR (l_uid IS NULL AND v_uid IS NOT NULL)
           OR (v_name IS NOT NULL AND v_name IS DISTINCT FROM l_name)
           OR (v_user IS NOT NULL AND v_user IS DISTINCT FROM l_user)
        THEN
            UPDATE "Lead"
               SET "phone" = coalesce("phone", v_phone),
                   "userId" = coalesce("userId", v_uid),
                   "name" = coalesce(v_name, "name"),
                   "username" = coalesce(v_user, "username"),
                   "updatedAt" = now()
             WHERE "id" = lead_id;
        END IF;

        -- Conversation: metacloud_bridge_default_conversation()
        PERFORM pg_advisory_xact_lock(hashtextextended(
            'conv|' || p_org || '|' || p_phone || '|' || lead_id, 0));
        SELECT x."id", x."lastMessageAt", x."lastInboundAt" INTO cv
          FROM "Conversation" x
         WHERE x."organizationId" = p_org
           AND x."phoneNumberId" = p_phone AND x."leadId" = lead_id
         ORDER BY x."createdAt", x."id" LIMIT 1;

        IF NOT FOUND THEN
            conversation_id := metacloud_new_id();
            INSERT INTO "Conversation" ("id", "organizationId", "leadId",
                   "phoneNumberId", "lastMessageAt", "lastInboundAt",
                   "updatedAt")
            VALUES (conversation_id, p_org, lead_id, p_phone, v_at,
                    CASE WHEN v_in THEN v_at END, now());
        ELSE
            conversation_id := cv."id";
            IF v_at > coalesce(cv."lastMessageAt", '-infinity')
               OR (v_in AND v_at > coalesce(cv."lastInboundAt", '-infinity'))
            THEN
                UPDATE "Conversation"
                   SET "lastMessageAt" = greatest("lastMessageAt", v_at),
                       "lastInboundAt" = greatest("lastInboundAt",
                           CASE WHEN v_in THEN v_at END),
                       "updatedAt" = now()
                 WHERE "id" = conversation_id;
            END IF;

            -- Ticket: metacloud_bridge_default_ticket()
            SELECT x."id" INTO ticket_id FROM "Ticket" x
             WHERE x."conversationId" = conversation_id AND x."status" = 'open'
             ORDER BY x."createdAt" DESC, x."id" LIMIT 1;
        END IF;

        IF ticket_id IS NULL AND v_open THEN
            ticket_id := metacloud_new_id();
            INSERT INTO "Ticket" ("id", "organizationId", "conversationId",
                                  "status", "updatedAt")
            VALUES (ticket_id, p_org, conversation_id, 'open', now());
        END IF;
    END IF;

    -- Message: metacloud_bridge_default_message() for a new row
    INSERT INTO "Message" ("id", "organizationId", "conversationId",
           "ticketId", "leadId", "direction", "type", "body", "status",
           "sentAt", "updatedAt")
    VALUES (message_id, p_org, conversation_id, ticket_id, lead_id,
            j ->> 'direction', j ->> 'rawType', j ->> 'text', v_status,
            v_at, now());

    -- changes that came before their target, in their order
    FOR c IN
        SELECT * FROM meta_cloud_messages x
         WHERE x."phoneNumberId" = p_phone
           AND coalesce(x."reactionMessageId", x."originalMessageId")
               = v_wamid
           AND x."type" IN ('REACTION', 'EDIT', 'REVOKE')
         ORDER BY x."sentAt", x."createdAt", x."id"
    LOOP
        PERFORM metacloud_bridge_default_change(c, message_id);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION metacloud_bridge_default_on_status(
    p_status_id text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    r  record;
BEGIN
    SELECT m."organizationId", m."messageId", m."wamid",
           m."currentStatus"::text AS cur, s."status"::text AS st
      INTO r
      FROM meta_cloud_message_statuses s
      JOIN meta_cloud_messages m ON m."id" = s."messageId"
     WHERE s."id" = p_status_id;

    -- a status that did not become current changes nothing
    IF r.st = r.cur THEN
        PERFORM metacloud_bridge_status(r."organizationId", r."messageId",
                                        r."wamid", r.cur);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION metacloud_bridge_default_on_state_sync(
    p_org text, p_phone text, p_contact jsonb)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF jsonb_typeof(p_contact) = 'object' THEN
        PERFORM metacloud_bridge_contact(p_org, p_phone, p_contact);
    END IF;
END
$$;


-- The hooks ------------------------------------------------------------------
-- Created when missing, or when still the no-op that 003 made; a platform's
-- version is kept.  Each is one call of its default.

DO $do$
DECLARE
    h      record;
    v_src  text;
BEGIN
    FOR h IN
        SELECT * FROM (VALUES
            ('metacloud_bridge_lead',
             'p_org text, p_phone text, p_user_id text, p_name text, '
             'p_username text', 'text', 5),
            ('metacloud_bridge_identity',
             'p_org text, p_old_phone text, p_old_user_id text, '
             'p_new_phone text, p_new_user_id text', 'text', 5),
            ('metacloud_bridge_conversation',
             'p_org text, p_phone_number_id text, p_lead text, '
             'p_at timestamptz, p_inbound boolean', 'text', 5),
            ('metacloud_bridge_ticket',
             'p_org text, p_conversation text, p_open boolean', 'text', 3),
            ('metacloud_bridge_message',
             'm meta_cloud_messages, p_lead text, p_conversation text, '
             'p_ticket text', 'text', 4),
            ('metacloud_bridge_change',
             'm meta_cloud_messages, p_target text', 'void', 2),
            ('metacloud_bridge_status',
             'p_org text, p_message text, p_wamid text, p_status text',
             'void', 4),
            ('metacloud_bridge_contact',
             'p_org text, p_phone_number_id text, c jsonb', 'text', 3),
            ('metacloud_on_message', 'p_message_id text', 'void', 1),
            ('metacloud_on_status', 'p_status_id text', 'void', 1),
            ('metacloud_on_state_sync',
             'p_org text, p_phone text, p_contact jsonb', 'void', 3))
            AS v(name, args, ret, nargs)
    LOOP
        -- the signature: the argument types, without their names
        SELECT p.prosrc INTO v_src FROM pg_proc p
         WHERE p.oid = to_regprocedure(format('%s(%s)', h.name,
                   regexp_replace(h.args, '(^|, )[a-z_]+ ', '\1', 'g')));

        IF v_src IS NULL OR v_src = ' BEGIN NULL; END ' THEN
            -- metacloud_bridge_lead -> metacloud_bridge_default_lead,
            -- metacloud_on_message -> metacloud_bridge_default_on_message
            EXECUTE format(
                'CREATE OR REPLACE FUNCTION %I(%s) RETURNS %s LANGUAGE sql '
                'AS %L', h.name, h.args, h.ret,
                format('SELECT metacloud_bridge_default_%s(%s)',
                       regexp_replace(h.name, '^metacloud_(bridge_)?', ''),
                       (SELECT string_agg('$' || i, ', ')
                          FROM generate_series(1, h.nargs) i)));
            EXECUTE format('COMMENT ON FUNCTION %I(%s) IS %L', h.name,
                           h.args, 'metacloud bridge hook: the default; '
                           'replace it (same signature) to change the rule');
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %I(%s) FROM PUBLIC',
                       h.name, h.args);
    END LOOP;
END
$do$;


-- metacloud_register_outbound() ------------------------------------------
-- The platform's sender records a message it sent through the Cloud API:
-- the OUTBOUND meta_cloud_messages row (source 'api'), its bridge
-- "Message", the campaign recipient's wamid when given; statuses that came
-- first are applied (the trigger of 003) and reach the recipient.  Returns
-- the meta_cloud_messages id; a second call changes nothing.  The
-- recipient is a phone number (wa_id) or a business-scoped user id
-- ("CC.xxxx").

CREATE OR REPLACE FUNCTION metacloud_register_outbound(organization_id text,
    phone_number_id text, wamid text, recipient text, type text, text text,
    campaign_recipient_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_org    text := metacloud_register_outbound.organization_id;
    v_phone  text := metacloud_register_outbound.phone_number_id;
    v_wamid  text := metacloud_register_outbound.wamid;
    v_to     text := metacloud_register_outbound.recipient;
    v_raw    text := metacloud_register_outbound.type;
    v_text   text := metacloud_register_outbound.text;
    v_cr     text := metacloud_register_outbound.campaign_recipient_id;
    v_bsuid  boolean := v_to ~ '^[A-Z]{2}\.';
    v_type   text := upper(v_raw);
    v_id     text;
    m        meta_cloud_messages;
BEGIN
    IF coalesce(v_org, '') = '' OR coalesce(v_phone, '') = ''
       OR coalesce(v_wamid, '') = '' OR coalesce(v_to, '') = ''
    THEN
        RAISE EXCEPTION 'organization_id, phone_number_id, wamid and '
                        'recipient are required';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM "MetaWhatsAppCredential" c
                    WHERE c."phoneNumberId" = v_phone
                      AND c."organizationId" = v_org)
    THEN
        RAISE EXCEPTION 'phone number % is not registered to organisation %',
                        v_phone, v_org;
    END IF;
    IF v_type IS NULL
       OR NOT v_type = ANY (enum_range(NULL::"MetaCloudMessageType")::text[])
    THEN
        v_type := 'UNKNOWN';
    END IF;

    -- before the message row: statuses waiting for it reach the recipient
    IF v_cr IS NOT NULL THEN
        UPDATE "CampaignRecipient" r
           SET "wamid" = v_wamid, "updatedAt" = now()
         WHERE r."id" = v_cr AND r."organizationId" = v_org
           AND r."wamid" IS DISTINCT FROM v_wamid;
    END IF;

    INSERT INTO meta_cloud_messages AS t
           ("id", "wamid", "organizationId", "phoneNumberId", "direction",
            "to", "toUserId", "type", "rawType", "text", "source", "sentAt",
            "currentStatus", "createdAt", "updatedAt")
    VALUES (metacloud_new_id(), v_wamid, v_org, v_phone, 'OUTBOUND',
            CASE WHEN NOT v_bsuid THEN v_to END,
            CASE WHEN v_bsuid THEN v_to END,
            v_type::"MetaCloudMessageType", v_raw, v_text, 'api', now(),
            'PENDING', now(), now())
    ON CONFLICT ("phoneNumberId", "wamid") DO NOTHING;

    SELECT * INTO m FROM meta_cloud_messages x
     WHERE x."phoneNumberId" = v_phone AND x."wamid" = v_wamid;
    v_id := m."id";

    IF m."messageId" IS NULL THEN
        PERFORM metacloud_on_message(v_id);
    END IF;
    IF v_cr IS NOT NULL THEN
        SELECT * INTO m FROM meta_cloud_messages x WHERE x."id" = v_id;
        PERFORM metacloud_bridge_status(v_org, m."messageId", m."wamid",
                                        m."currentStatus"::text);
    END IF;

    RETURN v_id;
END
$$;


-- Privileges -------------------------------------------------------------------
-- metacloud_platform (NOLOGIN): what the platform's sender may call.  Grant
-- it to the sender's own role: GRANT metacloud_platform TO <sender>.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metacloud_platform')
    THEN
        CREATE ROLE metacloud_platform NOLOGIN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO metacloud_platform',
                   current_schema());
END
$$;

REVOKE ALL ON FUNCTION metacloud_bridge_refresh() FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_rank(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_lock_person(text, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_lead(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_identity(text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_conversation(text, text, text, timestamptz, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_ticket(text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_message(meta_cloud_messages, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_change(meta_cloud_messages, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_status(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_contact(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_on_message(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_on_status(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_default_on_state_sync(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_prepare(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_prepare_set(text[], text[], jsonb[])
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_fast() FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_plain(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_phone(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_user(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_bridge_leads_of(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_register_outbound(text, text, text, text, text, text, text) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    metacloud_register_outbound(text, text, text, text, text, text, text)
    TO metacloud_platform;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (4, 'metacloud_bridge')
ON CONFLICT (version) DO NOTHING;
