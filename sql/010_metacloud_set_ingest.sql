-- 010_metacloud_set_ingest.sql
--
-- A delivery written with a few statements per table, not a loop of
-- sub-transactions.  Until now every event ran in its own sub-transaction
-- (two, with 007's guard) through PL/pgSQL: a status cost PostgreSQL about
-- 0.7 ms, and a body of more than 64 events overflowed the backend's
-- sub-transaction cache, which slows every other session while it runs.
--
-- metacloud_ingest() now tries the whole delivery at once, in ONE
-- sub-transaction (metacloud_ingest_set()):
--   1. every event row in one INSERT ... ON CONFLICT DO NOTHING RETURNING,
--      in (scope, webhookId) order as before (no deadlock between two
--      deliveries);
--   2. the new message, echo, history and state-sync events through
--      metacloud_process_event() one by one, without a sub-transaction of
--      their own (the bridge's rules stay where a platform replaces them);
--   3. the statuses: their (number, wamid) locks in one sorted pass, one
--      INSERT of every status whose message is known, one ladder-aware
--      UPDATE of "currentStatus", one UPDATE marking the others pending,
--      and the bridge's status updates as two statements when its hooks
--      are the defaults (else metacloud_on_status() per status, as before).
-- When anything in it fails for a reason of the data (not a deadlock, a
-- lock timeout, a lack of resources or a shutdown, which still fail the
-- call), that sub-transaction is rolled back and the delivery is written
-- again by metacloud_ingest_each(): 007's loop, one sub-transaction per
-- event, which isolates the failing one.  So every outcome is what 007
-- gave, and only a delivery with a failing event pays for isolation.
--
-- metacloud_ingest() has one home from now on: this file (003 and 007
-- keep only what they brought besides it).

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_event_key(), metacloud_event_invalid(), metacloud_event_row() --
-- An event's key and why it is invalid, as every path reads them: an event
-- without scope or webhookId is kept anyway, keyed so that a retry of the
-- same body is a duplicate, and marked failed.  The first two (and
-- metacloud_event_way(), what the set-based path does with an event) are
-- SQL expressions the planner inlines (no call per event); the third is the
-- event's row alone, for the loop of metacloud_ingest_each() and a
-- delivery of one event.  Only called from the functions below: no
-- search_path of their own.

CREATE OR REPLACE FUNCTION metacloud_event_key(e jsonb, p_sha bytea,
    p_n bigint)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(e ->> 'webhookId',
                    format('invalid:%s:%s', encode(p_sha, 'hex'), p_n))
$$;

CREATE OR REPLACE FUNCTION metacloud_event_invalid(e jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(e ->> 'invalid',
                    CASE WHEN e ->> 'scope' IS NULL
                              OR e ->> 'webhookId' IS NULL
                         THEN 'event without scope or webhookId' END)
$$;

-- what metacloud_ingest_set() does with a new event: 'status' (the
-- statuses' statements), 'rules' (metacloud_process_event()), or NULL
-- (failed or unrouted, as its row says, or a type only kept)
CREATE OR REPLACE FUNCTION metacloud_event_way(p_type text, p_invalid text,
    p_org text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_invalid IS NOT NULL OR p_org IS NULL THEN NULL
                WHEN p_type = 'status' THEN 'status'
                WHEN p_type IN ('message', 'echo', 'history_message',
                                'history_media', 'state_sync')
                THEN 'rules' END
$$;

-- the row's id, NULL when its key is here already (a duplicate)
CREATE OR REPLACE FUNCTION metacloud_event_row(p_raw_id text, p_scope text,
    p_key text, p_type text, p_invalid text, p_org text, e jsonb)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_id  text;
BEGIN
    INSERT INTO meta_cloud_webhook_events
           ("webhookId", "eventType", "phoneNumberId",
            "organizationId", "processed", "processedAt", "error",
            "payload", "receivedAt", "scope", "field", "wabaId",
            "rawRequestId", "unrouted", "event", "updatedAt")
    VALUES (p_key, p_type, e ->> 'phoneNumberId', p_org,
            p_invalid IS NULL AND p_org IS NOT NULL,
            CASE WHEN p_invalid IS NULL AND p_org IS NOT NULL
                 THEN now() END,
            p_invalid, coalesce(e -> 'payload', 'null'::jsonb), now(),
            p_scope, e ->> 'field', e ->> 'wabaId',
            p_raw_id, p_org IS NULL, e - 'payload', now())
    ON CONFLICT ("scope", "webhookId") DO NOTHING
    RETURNING "id" INTO v_id;

    RETURN v_id;
END
$$;


-- metacloud_ingest_each() --------------------------------------------------
-- The events of a delivery one by one, each in its own sub-transaction
-- (007): the fallback of metacloud_ingest().  Returns the counts and the
-- media ids as metacloud_ingest_set() does.  Only called from
-- metacloud_ingest(): no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_ingest_each(p_raw_id text, p_sha bytea,
    events jsonb)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    e             jsonb;
    v_order       bigint[];
    v_ord         bigint;
    v_scope       text;
    v_key         text;
    v_type        text;
    v_invalid     text;
    v_org         text;
    v_last_scope  text;
    v_event_id    text;
    v_failure     text;
    v_state       text;
    v_media_id    text;
    v_meta_media  text;
    p             record;
    n_events      int := jsonb_array_length(events);
    n_inserted    int := 0;
    n_duplicate   int := 0;
    n_failed      int := 0;
    n_unrouted    int := 0;
    n_pending     int := 0;
    n_msg_ok      int := 0;
    n_status_ok   int := 0;
    v_media       jsonb := '[]';
BEGIN
    -- the order of the events (their ordinalities); a delivery of one
    -- event needs no query for it
    IF n_events > 1 THEN
        v_order := ARRAY(
            SELECT x.ordinality
              FROM jsonb_array_elements(events) WITH ORDINALITY x
             ORDER BY (x.value ->> 'scope') COLLATE "C",
                      (x.value ->> 'webhookId') COLLATE "C",
                      x.ordinality);
    END IF;

    FOR i IN 1 .. n_events LOOP
        v_ord := coalesce(v_order[i], 1);
        e := events -> (v_ord::int - 1);
        v_scope := coalesce(e ->> 'scope', 'invalid');
        v_key := metacloud_event_key(e, p_sha, v_ord);
        v_type := coalesce(e ->> 'eventType', 'generic');
        v_invalid := metacloud_event_invalid(e);

        IF v_last_scope IS DISTINCT FROM v_scope THEN
            v_org := metacloud_route(v_scope);
            v_last_scope := v_scope;
        END IF;

        -- the event's row and its processing, in a sub-transaction: a
        -- value the table refuses fails this event only; counted after
        -- the block, whose variables an error does not undo
        v_event_id := NULL;
        v_failure := NULL;
        v_state := 'ok';
        v_media_id := NULL;

        BEGIN
            v_event_id := metacloud_event_row(p_raw_id, v_scope, v_key,
                                              v_type, v_invalid, v_org, e);

            IF v_event_id IS NULL THEN
                v_state := 'duplicate';
            ELSIF v_invalid IS NOT NULL THEN
                v_state := 'failed';
            ELSIF v_org IS NULL THEN
                v_state := 'unrouted';
            ELSIF v_type IN ('message', 'echo', 'history_message',
                             'history_media', 'status', 'state_sync')
            THEN
                p := metacloud_process_guarded(v_event_id, v_org, e, false);
                v_state := p.outcome;
                v_media_id := p.media_id;
                v_meta_media := p.meta_media_id;
            END IF;
        EXCEPTION
            WHEN transaction_rollback OR lock_not_available
                 OR insufficient_resources OR operator_intervention
                 OR system_error THEN
                RAISE;
            WHEN OTHERS THEN
                v_failure := SQLERRM;
        END;

        IF v_failure IS NOT NULL THEN
            v_state := CASE WHEN metacloud_store_failed_event(p_raw_id,
                                     p_sha, v_ord, e, v_type, v_failure)
                                 IS NULL
                            THEN 'duplicate' ELSE 'failed' END;
            v_media_id := NULL;
        END IF;

        IF v_state = 'duplicate' THEN
            n_duplicate := n_duplicate + 1;
            CONTINUE;
        END IF;

        n_inserted := n_inserted + 1;

        IF v_state = 'failed' THEN
            n_failed := n_failed + 1;
        ELSIF v_state = 'unrouted' THEN
            n_unrouted := n_unrouted + 1;
        ELSIF v_state = 'pending' THEN
            n_pending := n_pending + 1;
        ELSIF v_type = 'status' THEN
            n_status_ok := n_status_ok + 1;
        ELSIF v_type IN ('message', 'echo', 'history_message',
                         'history_media')
        THEN
            n_msg_ok := n_msg_ok + 1;
            IF v_media_id IS NOT NULL THEN
                v_media := v_media || jsonb_build_array(
                               jsonb_build_object('id', v_media_id,
                                                  'mediaId', v_meta_media));
            END IF;
        END IF;
    END LOOP;

    RETURN jsonb_build_object('inserted', n_inserted,
                              'duplicate', n_duplicate,
                              'failed', n_failed,
                              'unrouted', n_unrouted,
                              'pending', n_pending,
                              'messagesProcessed', n_msg_ok,
                              'statusesProcessed', n_status_ok,
                              'media', v_media);
END
$$;


-- metacloud_ingest_set() ---------------------------------------------------
-- The events of a delivery in a few statements (above).  Raises whatever a
-- statement raises: metacloud_ingest() then rolls it back and calls
-- metacloud_ingest_each().  Only called from metacloud_ingest(): no
-- search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_ingest_set(p_raw_id text, p_sha bytea,
    events jsonb)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_scope1    text;
    v_org1      text;
    e1          jsonb;
    v_type1     text;
    v_invalid1  text;
    v_id1       text;
    a_id        text[];     -- the new events for the per-event rules,
    a_org       text[];     -- in key order
    a_e         jsonb[];
    a_type      text[];
    v_st_ids    text[];
    v_st_phones text[];
    v_st_objs   jsonb[];
    v_done      text[];
    p           record;
    n_events    int := jsonb_array_length(events);
    n_inserted  int := 0;
    n_failed    int := 0;
    n_unrouted  int := 0;
    n_pending   int := 0;
    n_msg_ok    int := 0;
    n_status_ok int := 0;
    v_media     jsonb := '[]';
BEGIN
    -- 1. the event rows, in one statement (one event: its row alone); a
    -- key given twice in the body is inserted once, by its first event, as
    -- the loop did (the others count as duplicates).  A delivery is nearly
    -- always one scope: the first is routed here once, any other in the
    -- statement.
    -- 2. what came back, in key order, as counts and arrays (not a cursor:
    -- a fetch and a record per event cost a 50-status delivery more than
    -- the statements that read them): the statuses for the statements
    -- below, the message, echo, history and state-sync events for the
    -- per-event rules (and the bridge's hooks).
    e1 := events -> 0;
    v_scope1 := coalesce(e1 ->> 'scope', 'invalid');
    v_org1 := metacloud_route(v_scope1);

    IF n_events = 1 THEN
        -- One event, as nearly every message delivery is: its row alone.
        -- The statement below would cost it about 0.15 ms more (sorts, a
        -- join and a CTE set up for one row: bench/pgbench-ingest.sh).
        v_type1 := coalesce(e1 ->> 'eventType', 'generic');
        v_invalid1 := metacloud_event_invalid(e1);
        v_id1 := metacloud_event_row(p_raw_id, v_scope1,
                                     metacloud_event_key(e1, p_sha, 1),
                                     v_type1, v_invalid1, v_org1, e1);
        -- (and step 2 here: the statement below sets up a sort per
        -- aggregate, 0.18 ms for one row)
        IF v_id1 IS NOT NULL THEN
            n_inserted := 1;
            IF v_invalid1 IS NOT NULL THEN
                n_failed := 1;
            ELSIF v_org1 IS NULL THEN
                n_unrouted := 1;
            ELSIF metacloud_event_way(v_type1, NULL, v_org1) = 'status' THEN
                v_st_ids := ARRAY[v_id1];
                v_st_phones := ARRAY[coalesce(e1 ->> 'phoneNumberId',
                                              e1 ->> 'scope')];
                v_st_objs := ARRAY[e1 -> 'status'];
            ELSIF metacloud_event_way(v_type1, NULL, v_org1) = 'rules' THEN
                a_id := ARRAY[v_id1];
                a_org := ARRAY[v_org1];
                a_e := ARRAY[e1];
                a_type := ARRAY[v_type1];
            END IF;
        END IF;
    ELSE
        WITH d AS (
            SELECT DISTINCT ON (i.scope, i.key) i.*,
                   CASE WHEN i.scope = v_scope1 THEN v_org1
                        ELSE metacloud_route(i.scope) END AS org
              FROM (SELECT x.n, x.e,
                           coalesce(x.e ->> 'scope', 'invalid') AS scope,
                           metacloud_event_key(x.e, p_sha, x.n) AS key,
                           coalesce(x.e ->> 'eventType', 'generic')
                               AS type,
                           metacloud_event_invalid(x.e) AS invalid
                      FROM jsonb_array_elements(events)
                           WITH ORDINALITY AS x(e, n)) AS i
             ORDER BY i.scope, i.key, i.n
        ), ins AS (
            INSERT INTO meta_cloud_webhook_events AS w
                   ("webhookId", "eventType", "phoneNumberId",
                    "organizationId", "processed", "processedAt", "error",
                    "payload", "receivedAt", "scope", "field", "wabaId",
                    "rawRequestId", "unrouted", "event", "updatedAt")
            SELECT d.key, d.type, d.e ->> 'phoneNumberId', d.org,
                   d.invalid IS NULL AND d.org IS NOT NULL,
                   CASE WHEN d.invalid IS NULL AND d.org IS NOT NULL
                        THEN now() END,
                   d.invalid, coalesce(d.e -> 'payload', 'null'::jsonb),
                   now(), d.scope, d.e ->> 'field', d.e ->> 'wabaId',
                   p_raw_id, d.org IS NULL, d.e - 'payload', now()
              FROM d
             ORDER BY d.scope COLLATE "C", d.key COLLATE "C"
            ON CONFLICT ("scope", "webhookId") DO NOTHING
            RETURNING w."id", w."scope", w."webhookId"
        ), r AS (
            SELECT ins."id", d.org, d.e, d.type, d.invalid,
                   row_number() OVER (ORDER BY d.scope COLLATE "C",
                                               d.key COLLATE "C") AS k,
                   metacloud_event_way(d.type, d.invalid, d.org) AS way
              FROM ins
              JOIN d ON d.scope = ins."scope" AND d.key = ins."webhookId"
        )
        SELECT count(*), count(*) FILTER (WHERE r.invalid IS NOT NULL),
               count(*) FILTER (WHERE r.invalid IS NULL AND r.org IS NULL),
               array_agg(r.id ORDER BY r.k) FILTER (WHERE r.way = 'status'),
               array_agg(coalesce(r.e ->> 'phoneNumberId', r.e ->> 'scope')
                         ORDER BY r.k) FILTER (WHERE r.way = 'status'),
               array_agg(r.e -> 'status' ORDER BY r.k)
                   FILTER (WHERE r.way = 'status'),
               array_agg(r.id ORDER BY r.k) FILTER (WHERE r.way = 'rules'),
               array_agg(r.org ORDER BY r.k) FILTER (WHERE r.way = 'rules'),
               array_agg(r.e ORDER BY r.k) FILTER (WHERE r.way = 'rules'),
               array_agg(r.type ORDER BY r.k) FILTER (WHERE r.way = 'rules')
          INTO n_inserted, n_failed, n_unrouted, v_st_ids, v_st_phones,
               v_st_objs, a_id, a_org, a_e, a_type
          FROM r;
    END IF;

    -- the per-event rules, in key order
    FOR i IN 1 .. coalesce(cardinality(a_id), 0) LOOP
        p := metacloud_process_event(a_id[i], a_org[i], a_e[i]);
        IF a_type[i] <> 'state_sync' THEN
            n_msg_ok := n_msg_ok + 1;
        END IF;
        IF p.media_id IS NOT NULL THEN
            v_media := v_media || jsonb_build_array(
                           jsonb_build_object('id', p.media_id,
                                              'mediaId', p.meta_media_id));
        END IF;
    END LOOP;

    -- 3. statuses, all in one call (the rule of 003, which a single
    -- status goes through too); the others wait for their message
    IF v_st_ids IS NOT NULL THEN
        v_done := metacloud_apply_statuses(v_st_ids, v_st_phones, v_st_objs);
        n_status_ok := coalesce(cardinality(v_done), 0);
        n_pending := cardinality(v_st_ids) - n_status_ok;

        IF n_pending > 0 THEN
            UPDATE meta_cloud_webhook_events
               SET "processed" = false, "processedAt" = NULL,
                   "error" = 'message not found', "updatedAt" = now()
             WHERE "id" = ANY (v_st_ids)
               AND NOT "id" = ANY (coalesce(v_done, '{}'));
        END IF;
    END IF;

    RETURN jsonb_build_object('inserted', n_inserted,
                              'duplicate', n_events - n_inserted,
                              'failed', n_failed,
                              'unrouted', n_unrouted,
                              'pending', n_pending,
                              'messagesProcessed', n_msg_ok,
                              'statusesProcessed', n_status_ok,
                              'media', v_media);
END
$$;


-- metacloud_ingest() -----------------------------------------------------
-- One call, one transaction per webhook delivery (docs/EVENTS.md):
--   1. the events, in (scope, webhookId) order so that concurrent
--      deliveries take their row locks in one order and cannot deadlock,
--      are inserted with ON CONFLICT DO NOTHING: a retry or a copy sent to
--      another subscribed app is a "duplicate" and is not processed again;
--   2. each new event of a routed number is processed; an event that fails
--      is marked failed (processed false, error = the message) and only its
--      rows are undone: metacloud_ingest_set() writes the delivery in a few
--      statements inside one sub-transaction, and when that fails
--      metacloud_ingest_each() writes it again one event at a time, each
--      in its own (above);
--   3. the raw body is stored, with the counts.
-- Returns {rawId, received, messagesProcessed, statusesProcessed, inserted,
-- duplicate, failed, unrouted, pending, media}.  "inserted" counts every
-- new event; "failed", "unrouted" and "pending" (statuses waiting for their
-- message) are parts of it; messagesProcessed and statusesProcessed (the
-- PRD's summary) count the message and status events stored in this call;
-- media lists the media rows created (PENDING), for the download queue.

-- The work is metacloud_ingest_one(), without SET clauses: each costs a
-- GUC save and restore and the revalidation of cached plans on every
-- call, which metacloud_ingest_group() (011) pays once for a whole group
-- (about 15% of the CPU of a delivery in groups of 8, measured).  Only
-- called from those two: no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_ingest_one(raw bytea, events jsonb,
    info jsonb)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_raw_id   text := metacloud_new_id();
    v_sha      bytea := sha256(coalesce(raw, ''::bytea));
    v_outcome  text := coalesce(nullif(info ->> 'outcome', ''), 'ok');
    v_error    text := info ->> 'error';
    n_events   int := 0;
    c          jsonb := '{"inserted": 0, "duplicate": 0, "failed": 0,
                          "unrouted": 0, "pending": 0,
                          "messagesProcessed": 0, "statusesProcessed": 0,
                          "media": []}';
BEGIN
    IF v_outcome = 'ok' AND jsonb_typeof(events) IS DISTINCT FROM 'array' THEN
        -- a contract violation by the caller: keep the body, say why
        v_error := coalesce(v_error, 'events is not a JSON array');
        events := '[]';
    END IF;

    -- a body that is not a webhook: only the raw row, with its outcome
    IF v_outcome = 'ok' THEN
        n_events := jsonb_array_length(events);
    END IF;

    IF n_events > 0 THEN
        BEGIN
            c := metacloud_ingest_set(v_raw_id, v_sha, events);
        EXCEPTION
            WHEN transaction_rollback OR lock_not_available
                 OR insufficient_resources OR operator_intervention
                 OR system_error THEN
                RAISE;
            WHEN OTHERS THEN
                -- an event the set-based statements could not take: all
                -- of it is undone, and written again event by event
                c := metacloud_ingest_each(v_raw_id, v_sha, events);
        END;
    END IF;

    INSERT INTO meta_cloud_webhook_requests
           ("id", "body", "sha256", "receivedAt", "outcome", "error",
            "signatureChecked", "eventCount", "inserted", "duplicate",
            "failed", "unrouted", "pending")
    VALUES (v_raw_id, coalesce(raw, ''::bytea), v_sha, now(), v_outcome,
            v_error, coalesce((info ->> 'signatureChecked')::boolean, false),
            n_events, (c ->> 'inserted')::int, (c ->> 'duplicate')::int,
            (c ->> 'failed')::int, (c ->> 'unrouted')::int,
            (c ->> 'pending')::int);

    RETURN jsonb_build_object('rawId', v_raw_id, 'received', true) || c;
END
$$;


CREATE OR REPLACE FUNCTION metacloud_ingest(raw bytea, events jsonb,
    info jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
-- the rows this call inserts skip the pending-status trigger (003)
SET metacloud.ingest = 'on'
AS $$
BEGIN
    RETURN metacloud_ingest_one(raw, events, info);
END
$$;


REVOKE ALL ON FUNCTION metacloud_event_key(jsonb, bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_event_invalid(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_event_way(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_event_row(text, text, text, text, text, text,
                                           jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest_each(text, bytea, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest_set(text, bytea, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest_one(bytea, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest(bytea, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION metacloud_ingest(bytea, jsonb, jsonb)
    TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (10, 'metacloud_set_ingest')
ON CONFLICT (version) DO NOTHING;
