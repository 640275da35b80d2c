-- metacloud_new_id() (sql/002): a UUID of version 7 as text, its first 48
-- bits the time in milliseconds, ids of later milliseconds sorting after;
-- the rows a delivery makes (the module's tables and the bridge's) carry
-- such ids, and so do rows inserted with the tables' default.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-12', 'P12', 'WABA-P12', 'token-12')
       IS NOT NULL AS registered;

-- a version-7 UUID in the canonical text form
CREATE FUNCTION pg_temp.v7(id text) RETURNS boolean LANGUAGE sql AS $$
    SELECT id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
$$;

-- its time: the first 12 hex digits, milliseconds since 1970
CREATE FUNCTION pg_temp.ms(id text) RETURNS bigint LANGUAGE sql AS $$
    SELECT ('x' || lpad(replace(left(id, 13), '-', ''), 16, '0'))::bit(64)::bigint
$$;

DO $$
DECLARE
    a       text;
    b       text;
    before  bigint;
    after   bigint;
    ids     text[];
BEGIN
    before := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    a := metacloud_new_id();
    after := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    PERFORM pg_temp.is(pg_temp.v7(a), true, 'version 7: ' || a);
    PERFORM pg_temp.is(pg_temp.ms(a) BETWEEN before AND after, true,
                       'the time of ' || a || ' between ' || before
                       || ' and ' || after);

    PERFORM pg_sleep(0.002);
    b := metacloud_new_id();
    PERFORM pg_temp.is(b > a, true, 'a later id sorts after: ' || b || ' > ' || a);

    -- random within a millisecond: no two alike
    SELECT array_agg(metacloud_new_id()) INTO ids FROM generate_series(1, 10000);
    PERFORM pg_temp.is((SELECT count(DISTINCT x) FROM unnest(ids) x), 10000::bigint,
                       '10,000 ids, all different');
    PERFORM pg_temp.is((SELECT bool_and(pg_temp.v7(x)) FROM unnest(ids) x), true,
                       '10,000 ids, all version 7');
END
$$;

-- a delivery: the raw row, the event, the message, and the bridge's four
DO $$
DECLARE
    res  jsonb;
    m    record;
BEGIN
    res := metacloud_ingest(convert_to('body-12', 'UTF8'),
                            jsonb_build_array(pg_temp.msg('P12', 'wamid.ID12',
                                '{"message": {"from": "1200"}}')),
                            '{"signatureChecked": true}');
    PERFORM pg_temp.is(pg_temp.v7(res ->> 'rawId'), true,
                       'raw request id ' || (res ->> 'rawId'));

    SELECT x."id", x."webhookEventId", x."leadId", x."conversationId",
           x."ticketId", x."messageId"
      INTO m FROM meta_cloud_messages x
     WHERE x."phoneNumberId" = 'P12' AND x."wamid" = 'wamid.ID12';
    PERFORM pg_temp.is(pg_temp.v7(m."id"), true, 'message id ' || m."id");
    PERFORM pg_temp.is(pg_temp.v7(m."webhookEventId"), true,
                       'event id ' || m."webhookEventId");
    PERFORM pg_temp.is(pg_temp.v7(m."leadId"), true, 'lead id ' || m."leadId");
    PERFORM pg_temp.is(pg_temp.v7(m."conversationId"), true,
                       'conversation id ' || m."conversationId");
    PERFORM pg_temp.is(pg_temp.v7(m."ticketId"), true,
                       'ticket id ' || m."ticketId");
    PERFORM pg_temp.is(pg_temp.v7(m."messageId"), true,
                       'bridge message id ' || m."messageId");
END
$$;

-- every table of the module has it as its "id" default
DO $$
DECLARE
    r  record;
BEGIN
    FOR r IN SELECT c.relname, pg_get_expr(d.adbin, d.adrelid) AS def
               FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id'
               LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
              WHERE c.relnamespace = current_schema()::regnamespace
                AND c.relkind = 'r' AND c.relname LIKE 'meta\_cloud\_%'
    LOOP
        PERFORM pg_temp.is(r.def, 'metacloud_new_id()',
                           'the id default of ' || r.relname);
    END LOOP;
END
$$;

ROLLBACK;
