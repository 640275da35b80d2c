-- The bridge inside metacloud_ingest(): only for routed numbers (an
-- unrouted event gets its bridge rows when metacloud_add_phone_number()
-- replays it), and inside the event's sub-transaction (a bridge error fails
-- that event and undoes its rows, never its siblings').
BEGIN;
\ir helpers.psql

DO $$
DECLARE
    res  jsonb;
BEGIN
    -- unrouted: the event kept, no bridge row
    res := pg_temp.ingest(jsonb_build_array(pg_temp.msg('P07i', 'wamid.U1',
               '{"message": {"contactName": "Una"}}')));
    PERFORM pg_temp.is((res ->> 'unrouted')::int, 1, 'unrouted');
    PERFORM pg_temp.is((SELECT count(*) FROM "Lead")::int, 0,
                       'unrouted: no lead');

    -- the number registered: the replay makes the bridge rows
    res := metacloud_add_phone_number('org-07i', 'P07i', 'WABA-P07i', 't');
    PERFORM pg_temp.is((res ->> 'processed')::int, 1, 'replayed');
    PERFORM pg_temp.is((SELECT ROW(l."phone", l."name", m."body",
                                   t."status")::text
                          FROM meta_cloud_messages c
                          JOIN "Lead" l ON l."id" = c."leadId"
                          JOIN "Message" m ON m."id" = c."messageId"
                          JOIN "Ticket" t ON t."id" = c."ticketId"
                         WHERE c."wamid" = 'wamid.U1'),
                       ROW('16505551234', 'Una', 'hello', 'open')::text,
                       'replay: lead, message, ticket, all linked');
END
$$;

-- a platform's rule that fails for one person
CREATE OR REPLACE FUNCTION metacloud_bridge_lead(p_org text, p_phone text,
    p_user_id text, p_name text, p_username text)
RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    IF p_phone = '999' THEN
        RAISE EXCEPTION 'no lead for %', p_phone;
    END IF;
    RETURN metacloud_bridge_default_lead(p_org, p_phone, p_user_id, p_name,
                                         p_username);
END
$f$;

DO $$
DECLARE
    res  jsonb;
BEGIN
    res := pg_temp.ingest(jsonb_build_array(
        pg_temp.msg('P07i', 'wamid.E1', '{"message": {"from": "999"}}'),
        pg_temp.msg('P07i', 'wamid.E2', '{"message": {"from": "111"}}')));
    PERFORM pg_temp.is(ROW(res ->> 'inserted', res ->> 'failed')::text,
                       ROW('2', '1')::text, 'a bridge error fails one event');
    PERFORM pg_temp.is((SELECT ROW("processed", "error")::text
                          FROM meta_cloud_webhook_events
                         WHERE "webhookId" = 'msg:wamid.E1'),
                       ROW(false, 'no lead for 999')::text,
                       'the failed event keeps the error');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE "wamid" = 'wamid.E1')::int, 0,
                       'the failed event''s message row undone');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages c
                          JOIN "Message" m ON m."id" = c."messageId"
                         WHERE c."wamid" = 'wamid.E2')::int, 1,
                       'its sibling bridged');
END
$$;

ROLLBACK;
