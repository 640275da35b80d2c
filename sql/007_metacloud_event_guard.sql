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
--
-- The loop that does this is metacloud_ingest_each(), in
-- 010_metacloud_set_ingest.sql, metacloud_ingest()'s one home.

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


REVOKE ALL ON FUNCTION
    metacloud_store_failed_event(text, bytea, bigint, jsonb, text, text)
    FROM PUBLIC;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (7, 'metacloud_event_guard')
ON CONFLICT (version) DO NOTHING;
