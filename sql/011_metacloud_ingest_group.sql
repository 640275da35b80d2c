-- 011_metacloud_ingest_group.sql
--
-- Several deliveries in one transaction (the module's metacloud_db_group).
-- On a server with few cores, sixteen busy sessions cost PostgreSQL about
-- 40% more CPU per delivery than two, and a commit per delivery is a WAL
-- flush per delivery: a worker whose deliveries queue up sends them to one
-- session as one call of metacloud_ingest_group() (docs/SQL.md, "Group
-- commit").
--
-- Each delivery is metacloud_ingest()'s work (metacloud_ingest_one(), 010)
-- in a sub-transaction of its own, the SET clauses paid once for the
-- group: one that fails for a reason of its own (the call raises) is
-- rolled back alone and reported on its row, and the others commit.  A
-- deadlock, a serialization failure, a lock timeout, a lack of resources
-- or a shutdown fails the whole call (as it fails metacloud_ingest()):
-- the module then sends each delivery of the group again on its own.
-- Consecutive deliveries of one message each, of different people, go
-- together as a batch (metacloud_ingest_batch(), below): one statement
-- per table for all of them, in one sub-transaction; when it raises, each
-- of them runs alone as above.
--
-- Two groups that share people could take the same locks crosswise (each
-- delivery locks its (number, wamid) and its person's lead): the
-- deliveries run in the order of their person, so two groups take those
-- locks in one order.  The rows come back in that order, each with the
-- index of its delivery ("ord").

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_ingest_batch() -------------------------------------------------
-- Deliveries of one message event each, from different people, written
-- together (a batch of metacloud_ingest_group(), below): one INSERT of
-- their event rows, one of their media rows, the bridge's fast path for
-- all of them (metacloud_bridge_prepare_set(), 004), one INSERT of their
-- message rows, one of their raw rows.  What metacloud_ingest_one() would
-- write for each, with one statement per table instead of one per
-- delivery and table: the
-- start-up of a statement's plan and its PL/pgSQL call cost more than the
-- rows of a text message.  A message the fast path does not take (its row
-- exists, a hook replaced) goes through metacloud_process_event() alone.
-- Returns each delivery's result, in their order.  Raises whatever a
-- statement raises: the caller then writes them one by one.  Only called
-- from metacloud_ingest_group(): no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_ingest_batch(p_bodies bytea[],
    p_events jsonb[], p_infos jsonb[])
RETURNS jsonb[]
LANGUAGE plpgsql
AS $$
DECLARE
    a_ev      jsonb[];      -- the event of each delivery
    a_raw     text[];       -- raw row ids
    a_org     text[];
    a_num     text[];
    a_id      text[];       -- event row ids (NULL: a duplicate)
    a_wamid   text[];
    a_done    boolean[];    -- written by the fast path
    a_lead    text[];
    a_conv    text[];
    a_ticket  text[];
    a_msg     text[];
    a_pend    boolean[];    -- a new message with statuses waiting for it
    a_new     text[];       -- the organisation of a new event, else NULL
    a_media   text[];       -- media row ids
    a_queued  jsonb[];      -- each delivery's "media" (the rows it made)
    v_scope   text;
    v_org     text;
BEGIN
    -- the events, their organisations (a batch is nearly always one
    -- number: each scope routed once)
    a_ev := ARRAY(SELECT e -> 0 FROM unnest(p_events) AS e);
    FOR i IN 1 .. cardinality(a_ev) LOOP
        IF v_scope IS DISTINCT FROM a_ev[i] ->> 'scope' THEN
            v_scope := a_ev[i] ->> 'scope';
            v_org := metacloud_route(v_scope);
        END IF;
        a_org[i] := v_org;
    END LOOP;

    -- the event rows, in (scope, webhookId) order as every path inserts
    -- them
    SELECT array_agg(metacloud_new_id() ORDER BY d.k),
           array_agg(coalesce(d.e ->> 'phoneNumberId', d.e ->> 'scope')
                     ORDER BY d.k),
           array_agg(d.e -> 'message' ->> 'wamid' ORDER BY d.k)
      INTO a_raw, a_num, a_wamid
      FROM unnest(a_ev) WITH ORDINALITY AS d(e, k);

    WITH ins AS (
        INSERT INTO meta_cloud_webhook_events AS w
               ("webhookId", "eventType", "phoneNumberId",
                "organizationId", "processed", "processedAt", "error",
                "payload", "receivedAt", "scope", "field", "wabaId",
                "rawRequestId", "unrouted", "event", "updatedAt")
        SELECT d.e ->> 'webhookId', d.e ->> 'eventType',
               d.e ->> 'phoneNumberId', d.org, d.org IS NOT NULL,
               CASE WHEN d.org IS NOT NULL THEN now() END, NULL,
               coalesce(d.e -> 'payload', 'null'::jsonb), now(),
               d.e ->> 'scope', d.e ->> 'field', d.e ->> 'wabaId', d.raw,
               d.org IS NULL, d.e - 'payload', now()
          FROM unnest(a_ev, a_org, a_raw) AS d(e, org, raw)
         ORDER BY d.e ->> 'scope' COLLATE "C", d.e ->> 'webhookId' COLLATE "C"
        ON CONFLICT ("scope", "webhookId") DO NOTHING
        RETURNING w."id", w."scope", w."webhookId")
    SELECT array_agg(ins."id" ORDER BY d.k) INTO a_id
      FROM unnest(a_ev) WITH ORDINALITY AS d(e, k)
      LEFT JOIN ins ON ins."scope" = d.e ->> 'scope'
                   AND ins."webhookId" = d.e ->> 'webhookId';

    -- the new ones of a known number (the others: a NULL organisation)
    a_new := ARRAY(SELECT CASE WHEN x.id IS NOT NULL THEN x.org END
                     FROM unnest(a_id, a_org) AS x(id, org));

    -- their media (metacloud_media_rows(), 003); a media id new here is
    -- queued by the first of its deliveries, as one by one
    IF (SELECT bool_or(jsonb_typeof(x.e -> 'media') = 'object')
          FROM unnest(a_ev, a_new) AS x(e, org) WHERE x.org IS NOT NULL)
    THEN
        SELECT array_agg(y.id ORDER BY y.k),
               array_agg(CASE WHEN y.first
                              THEN jsonb_build_array(jsonb_build_object(
                                       'id', y.id, 'mediaId', y.media_id))
                              ELSE '[]' END ORDER BY y.k)
          INTO a_media, a_queued
          FROM (SELECT d.k, r.r_id AS id, r.r_media_id AS media_id,
                       r.r_new AND d.k = min(d.k) OVER (
                                             PARTITION BY r.r_media_id)
                           AS first
                  FROM unnest(a_ev, a_new) WITH ORDINALITY AS d(e, org, k)
                  LEFT JOIN metacloud_media_rows(a_new, a_num,
                                ARRAY(SELECT CASE WHEN x.org IS NOT NULL
                                                  THEN x.e -> 'media' END
                                        FROM unnest(a_ev, a_new)
                                             AS x(e, org)))
                            AS r
                    ON d.org IS NOT NULL
                   AND r.r_media_id = d.e -> 'media' ->> 'mediaId') AS y;
    END IF;

    -- the bridge, then their rows, then the statuses that waited for them
    SELECT array_agg(s.handled ORDER BY s.k),
           array_agg(s.lead_id ORDER BY s.k),
           array_agg(s.conversation_id ORDER BY s.k),
           array_agg(s.ticket_id ORDER BY s.k),
           array_agg(s.message_id ORDER BY s.k)
      INTO a_done, a_lead, a_conv, a_ticket, a_msg
      FROM metacloud_bridge_prepare_set(a_new, a_num, a_ev) WITH ORDINALITY
           AS s(handled, lead_id, conversation_id, ticket_id, message_id, k);

    IF true = ANY (a_done) THEN
        SELECT array_agg(x.new ORDER BY d.k) INTO a_pend
          FROM unnest(a_num, a_wamid) WITH ORDINALITY AS d(num, wamid, k)
          LEFT JOIN metacloud_message_rows(false, a_org,
                        ARRAY(SELECT CASE WHEN y.done THEN y.id END
                                FROM unnest(a_done, a_id) AS y(done, id)),
                        a_num, a_media, a_ev, a_lead, a_conv, a_ticket, a_msg)
                    AS r ON r.r_phone = d.num AND r.r_wamid = d.wamid
          LEFT JOIN LATERAL (
               SELECT r.r_new AND EXISTS (
                          SELECT FROM meta_cloud_webhook_events w
                           WHERE w."scope" = d.num
                             AND ((w."event" -> 'status') ->> 'wamid')
                                 = d.wamid
                             AND w."eventType" = 'status'
                             AND NOT w."processed" AND NOT w."unrouted"))
               AS x(new) ON true;

        FOR i IN 1 .. cardinality(a_ev) LOOP
            IF a_pend[i] THEN
                PERFORM metacloud_apply_pending(a_num[i], a_wamid[i],
                                                a_org[i]);
            END IF;
        END LOOP;
    END IF;

    -- the others one by one (the fast path did not take them)
    FOR i IN 1 .. cardinality(a_ev) LOOP
        IF a_id[i] IS NOT NULL AND a_org[i] IS NOT NULL AND NOT a_done[i]
        THEN
            PERFORM metacloud_process_event(a_id[i], a_org[i], a_ev[i]);
        END IF;
    END LOOP;

    INSERT INTO meta_cloud_webhook_requests
           ("id", "body", "sha256", "receivedAt", "outcome", "error",
            "signatureChecked", "eventCount", "inserted", "duplicate",
            "failed", "unrouted", "pending")
    SELECT d.raw, coalesce(d.body, ''::bytea),
           sha256(coalesce(d.body, ''::bytea)), now(), 'ok',
           d.info ->> 'error',
           coalesce((d.info ->> 'signatureChecked')::boolean, false), 1,
           (d.id IS NOT NULL)::int, (d.id IS NULL)::int, 0,
           (d.id IS NOT NULL AND d.org IS NULL)::int, 0
      FROM unnest(a_raw, p_bodies, p_infos, a_id, a_org)
           AS d(raw, body, info, id, org);

    RETURN ARRAY(
        SELECT jsonb_build_object(
                   'rawId', d.raw, 'received', true,
                   'inserted', (d.id IS NOT NULL)::int,
                   'duplicate', (d.id IS NULL)::int, 'failed', 0,
                   'unrouted', (d.id IS NOT NULL AND d.org IS NULL)::int,
                   'pending', 0,
                   'messagesProcessed',
                   (d.id IS NOT NULL AND d.org IS NOT NULL)::int,
                   'statusesProcessed', 0,
                   'media', coalesce(d.media, '[]'))
          FROM unnest(a_raw, a_id, a_org, a_queued) WITH ORDINALITY
               AS d(raw, id, org, media, k)
         ORDER BY d.k);
END
$$;


-- metacloud_ingest_group() -------------------------------------------------
-- bodies, events and infos are metacloud_ingest()'s three arguments, one
-- element per delivery (events and infos as text: the module sends the
-- arrays in binary, and text elements need no conversion there).
--
-- The deliveries run in the order of their person.  Consecutive ones of
-- one message event each (not a reaction, edit, revoke or system
-- message), of different people, go together as one batch
-- (metacloud_ingest_batch(), above) in one sub-transaction; when that
-- raises, each of them runs alone as every other delivery does.  So the
-- locks are still taken in the order of the people.

CREATE OR REPLACE FUNCTION metacloud_ingest_group(bodies bytea[],
    events text[], infos text[])
RETURNS TABLE (ord int, error text, result jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
-- as metacloud_ingest(): the rows skip the pending-status trigger (003)
SET metacloud.ingest = 'on'
-- A batch's statements take arrays, whose length a custom plan knows and a
-- generic one guesses: their custom plans looked cheaper, so PostgreSQL
-- planned them again on every call (a fifth of the backend's CPU, perf).
-- Generic plans: 843-880 us of backend CPU a delivery against 1,113-1,640
-- (pgbench, groups of eight text messages from new contacts).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_events  jsonb[];
    v_infos   jsonb[];
    v_order   int[];
    v_batch   int[] := '{}';   -- deliveries waiting to go together
    v_phones  text[] := '{}';  -- their people
    v_uids    text[] := '{}';
    v_alone   int[];
    v_res     jsonb[];
    v_ok      boolean;
    v_phone   text;
    v_uid     text;
    k         int;
    u         int;
    m         jsonb;
BEGIN
    IF cardinality(bodies) IS DISTINCT FROM cardinality(events)
       OR cardinality(bodies) IS DISTINCT FROM cardinality(infos)
    THEN
        RAISE EXCEPTION 'metacloud_ingest_group(): % bodies, % events, '
                        '% infos', cardinality(bodies), cardinality(events),
                        cardinality(infos);
    END IF;

    v_events := events::jsonb[];
    v_infos := ARRAY(SELECT coalesce(x, '{}')::jsonb FROM unnest(infos) x);

    v_order := ARRAY(
        SELECT i
          FROM generate_subscripts(v_events, 1) AS s(i)
         ORDER BY (SELECT coalesce(
                       CASE WHEN x -> 'message' ->> 'direction' = 'OUTBOUND'
                            THEN x -> 'message' ->> 'to'
                            ELSE x -> 'message' ->> 'from' END,
                       x -> 'contact' ->> 'waId',
                       x -> 'status' ->> 'recipientId',
                       x ->> 'webhookId')
                     FROM (SELECT v_events[i] -> 0) AS f(x)),
                  i);

    -- one pass more than the deliveries: the last one sends the batch
    FOR i IN 1 .. cardinality(v_order) + 1 LOOP
        v_ok := false;
        IF i <= cardinality(v_order) THEN
            k := v_order[i];
            m := v_events[k] -> 0 -> 'message';
            v_ok := coalesce(nullif(v_infos[k] ->> 'outcome', ''), 'ok')
                        = 'ok'
                    AND jsonb_typeof(v_events[k]) = 'array'
                    AND jsonb_array_length(v_events[k]) = 1
                    AND v_events[k] -> 0 ->> 'eventType' IN ('message', 'echo')
                    AND metacloud_event_invalid(v_events[k] -> 0) IS NULL
                    AND jsonb_typeof(m) = 'object'
                    AND metacloud_bridge_plain(m);
            IF v_ok THEN
                -- the person, as metacloud_bridge_prepare_set() finds it
                v_phone := metacloud_bridge_phone(m);
                v_uid := metacloud_bridge_user(m);
                IF (v_phone = ANY (v_phones) OR v_uid = ANY (v_uids))
                   IS NOT TRUE
                THEN
                    v_batch := v_batch || k;
                    v_phones := v_phones || v_phone;
                    v_uids := v_uids || v_uid;
                    CONTINUE;
                END IF;
            END IF;
        END IF;

        -- this delivery, when it cannot start the next batch, runs alone
        -- after the batch so far
        v_alone := '{}';
        IF NOT v_ok AND i <= cardinality(v_order) THEN
            v_alone := ARRAY[k];
        END IF;

        -- u = 0: the batch so far (two or more), in one sub-transaction;
        -- then one by one, each in its own: what is alone, and the batch's
        -- deliveries when it raised (or was one)
        u := 0;
        LOOP
            v_res := NULL;
            result := NULL;
            error := NULL;
            BEGIN
                IF u = 0 THEN
                    IF cardinality(v_batch) > 1 THEN
                        v_res := metacloud_ingest_batch(
                            ARRAY(SELECT bodies[x] FROM unnest(v_batch) x),
                            ARRAY(SELECT v_events[x] FROM unnest(v_batch) x),
                            ARRAY(SELECT v_infos[x] FROM unnest(v_batch) x));
                    END IF;
                ELSE
                    ord := v_alone[u];
                    result := metacloud_ingest_one(bodies[ord], v_events[ord],
                                                   v_infos[ord]);
                END IF;
            EXCEPTION
                WHEN transaction_rollback OR lock_not_available
                     OR insufficient_resources OR operator_intervention
                     OR system_error THEN
                    RAISE;
                WHEN OTHERS THEN
                    error := SQLERRM;
            END;

            IF u > 0 THEN
                RETURN NEXT;
            ELSIF v_res IS NOT NULL THEN
                FOR j IN 1 .. cardinality(v_batch) LOOP
                    ord := v_batch[j];
                    result := v_res[j];
                    RETURN NEXT;
                END LOOP;
            ELSE
                v_alone := v_batch || v_alone;
            END IF;

            u := u + 1;
            EXIT WHEN u > cardinality(v_alone);
        END LOOP;

        -- this delivery starts the next batch
        v_batch := '{}';
        v_phones := '{}';
        v_uids := '{}';
        IF v_ok THEN
            v_batch := ARRAY[k];
            v_phones := ARRAY[v_phone];
            v_uids := ARRAY[v_uid];
        END IF;
    END LOOP;
END
$$;


REVOKE ALL ON FUNCTION metacloud_ingest_batch(bytea[], jsonb[], jsonb[])
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest_group(bytea[], text[], text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION metacloud_ingest_group(bytea[], text[], text[])
    TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (11, 'metacloud_ingest_group')
ON CONFLICT (version) DO NOTHING;
