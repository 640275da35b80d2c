-- 007_metacloud_event_guard.sql
--
-- One event that cannot be stored fails that event only.  Until now the
-- insert of an event's row ran outside any sub-transaction: a value the
-- table refuses (an index row beyond the btree limit, for a key or an
-- indexed value thousands of characters long) aborted metacloud_ingest()
-- whole, the delivery got 503 and every retry failed the same way, so the
-- raw body and the body's other events were never stored.  The module
-- bounds every id that enters a key or an indexed column (docs/EVENTS.md);
-- this makes SQL safe against any caller: such an event is kept as a row
-- marked failed with the reason, keyed by the body and its position (so
-- that a retry is a duplicate), and the others and the raw row are stored.
--
-- Transient errors (deadlock, serialisation, lock timeout, out of
-- resources, shutdown) still abort the whole call: the module answers 503
-- and Meta retries.

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_store_failed_event() -------------------------------------------
-- The row of an event whose own row was refused: scope "invalid", key
-- failed:<sha256 of the raw body>:<position in the events array>, no
-- column taken from the event but its type, field and payload, and the
-- error.  Returns the new row's id, or NULL when a retry stored it before.
-- If even that row is refused (the payload itself), the event is counted
-- failed with no row: the raw body still holds it.  Only called from
-- metacloud_ingest(): no search_path of its own.

CREATE OR REPLACE FUNCTION metacloud_store_failed_event(p_raw_id text,
    p_sha bytea, p_ord bigint, e jsonb, p_type text, p_error text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_id     text;
    v_key    text := format('failed:%s:%s', encode(p_sha, 'hex'), p_ord);
    v_error  text := 'event not stored as sent: ' || left(p_error, 500);
BEGIN
    BEGIN
        INSERT INTO meta_cloud_webhook_events
               ("webhookId", "eventType", "phoneNumberId", "organizationId",
                "processed", "error", "payload", "receivedAt", "scope",
                "field", "rawRequestId", "unrouted", "updatedAt")
        VALUES (v_key, left(p_type, 100), NULL, NULL, false, v_error,
                coalesce(e -> 'payload', 'null'::jsonb), now(), 'invalid',
                left(e ->> 'field', 100), p_raw_id, false, now())
        ON CONFLICT ("scope", "webhookId") DO NOTHING
        RETURNING "id" INTO v_id;

        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    EXCEPTION
        WHEN transaction_rollback OR lock_not_available
             OR insufficient_resources OR operator_intervention
             OR system_error THEN
            RAISE;
        WHEN OTHERS THEN
            -- not even that: no row; the raw body keeps the event
            RETURN 'none';
    END;

    RETURN v_id;
END
$$;


-- metacloud_ingest() -----------------------------------------------------
-- As in 003_metacloud_ingest.sql, with the event's row inserted in its own
-- sub-transaction (above).

CREATE OR REPLACE FUNCTION metacloud_ingest(raw bytea, events jsonb,
    info jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_raw_id      text := gen_random_uuid()::text;
    v_sha         bytea := sha256(coalesce(raw, ''::bytea));
    v_outcome     text := coalesce(nullif(info ->> 'outcome', ''), 'ok');
    v_error       text := info ->> 'error';
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
    n_events      int := 0;
    n_inserted    int := 0;
    n_duplicate   int := 0;
    n_failed      int := 0;
    n_unrouted    int := 0;
    n_pending     int := 0;
    n_msg_ok      int := 0;
    n_status_ok   int := 0;
    v_media       jsonb := '[]';
BEGIN
    IF v_outcome = 'ok' AND jsonb_typeof(events) IS DISTINCT FROM 'array' THEN
        -- a contract violation by the caller: keep the body, say why
        v_error := coalesce(v_error, 'events is not a JSON array');
        events := '[]';
    END IF;

    -- a body that is not a webhook: only the raw row, with its outcome
    IF v_outcome = 'ok' THEN
        -- the order of the events (their ordinalities); a delivery of one
        -- event, the usual case, needs no query for it
        n_events := jsonb_array_length(events);
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
            v_scope := e ->> 'scope';
            v_key := e ->> 'webhookId';
            v_type := coalesce(e ->> 'eventType', 'generic');
            v_invalid := e ->> 'invalid';

            IF v_scope IS NULL OR v_key IS NULL THEN
                -- keep it anyway, keyed so that a retry of the same body is
                -- a duplicate, and mark it failed
                v_scope := coalesce(v_scope, 'invalid');
                v_key := coalesce(v_key, format('invalid:%s:%s',
                                                encode(v_sha, 'hex'), v_ord));
                v_invalid := coalesce(v_invalid,
                                      'event without scope or webhookId');
            END IF;

            -- a delivery is almost always one scope: look it up once
            -- (metacloud_route(), inlined)
            IF v_last_scope IS DISTINCT FROM v_scope THEN
                IF v_scope LIKE 'waba:%' THEN
                    v_org := (SELECT c."organizationId"
                                FROM "MetaWhatsAppCredential" c
                               WHERE c."wabaId" = substr(v_scope, 6)
                               ORDER BY c."id" LIMIT 1);
                ELSE
                    v_org := (SELECT c."organizationId"
                                FROM "MetaWhatsAppCredential" c
                               WHERE c."phoneNumberId" = v_scope);
                END IF;
                v_last_scope := v_scope;
            END IF;

            -- the event's row and its processing, in a sub-transaction: a
            -- value the table refuses (a key or an indexed value beyond the
            -- btree limit, from a caller that did not bound it) fails this
            -- event only, never the delivery; counted after the block,
            -- whose variables an error does not undo
            v_event_id := NULL;
            v_failure := NULL;
            v_state := 'ok';
            v_media_id := NULL;

            BEGIN
                INSERT INTO meta_cloud_webhook_events
                       ("webhookId", "eventType", "phoneNumberId",
                        "organizationId", "processed", "processedAt", "error",
                        "payload", "receivedAt", "scope", "field", "wabaId",
                        "rawRequestId", "unrouted", "event", "updatedAt")
                VALUES (v_key, v_type, e ->> 'phoneNumberId',
                        v_org,
                        v_invalid IS NULL AND v_org IS NOT NULL,
                        CASE WHEN v_invalid IS NULL AND v_org IS NOT NULL
                             THEN now() END,
                        v_invalid,
                        coalesce(e -> 'payload', 'null'::jsonb), now(),
                        v_scope, e ->> 'field', e ->> 'wabaId',
                        v_raw_id, v_org IS NULL, e - 'payload', now())
                ON CONFLICT ("scope", "webhookId") DO NOTHING
                RETURNING "id" INTO v_event_id;

                IF v_event_id IS NULL THEN
                    v_state := 'duplicate';
                ELSIF v_invalid IS NOT NULL THEN
                    v_state := 'failed';
                ELSIF v_org IS NULL THEN
                    v_state := 'unrouted';
                -- only these types write rows: no processing for the rest
                ELSIF v_type IN ('message', 'echo', 'history_message',
                                 'history_media', 'status', 'state_sync')
                THEN
                    p := metacloud_process_guarded(v_event_id, v_org, e,
                                                   false);
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
                v_state := CASE WHEN metacloud_store_failed_event(v_raw_id,
                                         v_sha, v_ord, e, v_type, v_failure)
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
                                                      'mediaId',
                                                      v_meta_media));
                END IF;
            END IF;
        END LOOP;
    END IF;

    INSERT INTO meta_cloud_webhook_requests
           ("id", "body", "sha256", "receivedAt", "outcome", "error",
            "signatureChecked", "eventCount", "inserted", "duplicate",
            "failed", "unrouted", "pending")
    VALUES (v_raw_id, coalesce(raw, ''::bytea), v_sha, now(), v_outcome,
            v_error, coalesce((info ->> 'signatureChecked')::boolean, false),
            n_events, n_inserted, n_duplicate, n_failed, n_unrouted,
            n_pending);

    -- received, messagesProcessed, statusesProcessed: the PRD's summary
    RETURN jsonb_build_object('rawId', v_raw_id,
                              'received', true,
                              'messagesProcessed', n_msg_ok,
                              'statusesProcessed', n_status_ok,
                              'inserted', n_inserted,
                              'duplicate', n_duplicate,
                              'failed', n_failed,
                              'unrouted', n_unrouted,
                              'pending', n_pending,
                              'media', v_media);
END
$$;


REVOKE ALL ON FUNCTION
    metacloud_store_failed_event(text, bytea, bigint, jsonb, text, text)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_ingest(bytea, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION metacloud_ingest(bytea, jsonb, jsonb)
    TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (7, 'metacloud_event_guard')
ON CONFLICT (version) DO NOTHING;
