-- metacloud_ingest_group() (sql/011) alone: deliveries in the order of
-- their person, each one's row in the order given, one delivery's error
-- on its own row with its work undone and the others kept, a deadlock
-- failing the whole call, arrays of different lengths refused.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-11', 'P11', 'WABA-P11', 'token-11')
       IS NOT NULL AS registered;

-- the order the deliveries ran in, kept by a trigger on the raw rows (a
-- sequence is not rolled back: the failing delivery's number stays taken)
CREATE TEMP SEQUENCE ran_seq;
CREATE TEMP TABLE ran (n bigint, body text);
CREATE FUNCTION pg_temp.ran() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ran VALUES (nextval('ran_seq'),
                            convert_from(NEW."body", 'UTF8'));
    IF convert_from(NEW."body", 'UTF8') = 'boom' THEN
        RAISE EXCEPTION 'group test: boom';
    END IF;
    IF convert_from(NEW."body", 'UTF8') = 'deadlock' THEN
        RAISE EXCEPTION 'group test: deadlock' USING ERRCODE = '40P01';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ran AFTER INSERT ON meta_cloud_webhook_requests
    FOR EACH ROW EXECUTE FUNCTION pg_temp.ran();

DO $$
DECLARE
    -- three people: 3..., 1..., 2...; the second delivery fails
    e1  jsonb := jsonb_build_array(pg_temp.msg('P11', 'wamid.G1',
                     '{"message": {"from": "3000"}}'));
    e2  jsonb := jsonb_build_array(pg_temp.msg('P11', 'wamid.G2',
                     '{"message": {"from": "1000"}}'));
    e3  jsonb := jsonb_build_array(pg_temp.msg('P11', 'wamid.G3',
                     '{"message": {"from": "2000"}}'));
    r   record;
    rows jsonb := '[]';
BEGIN
    FOR r IN SELECT g.ord, g.error, g.result
               FROM metacloud_ingest_group(
                        ARRAY[convert_to('first', 'UTF8'),
                              convert_to('boom', 'UTF8'),
                              convert_to('third', 'UTF8')],
                        ARRAY[e1::text, e2::text, e3::text],
                        ARRAY['{"outcome": "ok"}', '{"outcome": "ok"}',
                              '{"outcome": "ok"}']) AS g
    LOOP
        rows := rows || jsonb_build_object('ord', r.ord, 'error', r.error,
                                           'inserted', r.result -> 'inserted',
                                           'rawId', r.result -> 'rawId');
    END LOOP;

    -- the three are one batch (014): boom's row raises, the batch is
    -- undone (ran_seq 1), then each runs alone, boom first (2, undone)
    PERFORM pg_temp.is((SELECT array_agg(n || ' ' || body ORDER BY n)
                          FROM ran),
                       ARRAY['3 third', '4 first'],
                       'ran in the order of their person (1000: boom, '
                       'undone, then 2000, 3000)');
    PERFORM pg_temp.is(currval('ran_seq'), 4::bigint,
                       'the batch, then each alone');
    PERFORM pg_temp.is((SELECT array_agg((x ->> 'ord')::int) FROM
                        jsonb_array_elements(rows) x),
                       ARRAY[2, 3, 1], 'a row per delivery, in that order');
    PERFORM pg_temp.is((SELECT x ->> 'error' FROM jsonb_array_elements(rows) x
                         WHERE (x ->> 'ord')::int = 2),
                       'group test: boom', 'the failing one: its error');
    PERFORM pg_temp.is((SELECT x ->> 'rawId' FROM jsonb_array_elements(rows) x
                         WHERE (x ->> 'ord')::int = 2),
                       NULL::text, 'the failing one: no result');
    PERFORM pg_temp.is((SELECT count(*) FROM jsonb_array_elements(rows) x
                         WHERE x ->> 'error' IS NULL
                           AND (x ->> 'inserted')::int = 1), 2::bigint,
                       'the other two: inserted');
    PERFORM pg_temp.is((SELECT array_agg("wamid" ORDER BY "wamid")
                          FROM meta_cloud_messages WHERE "phoneNumberId" = 'P11'),
                       ARRAY['wamid.G1', 'wamid.G3'],
                       'the failing one left no message');
    PERFORM pg_temp.is((SELECT array_agg(convert_from("body", 'UTF8')
                                         ORDER BY convert_from("body", 'UTF8'))
                          FROM meta_cloud_webhook_requests
                         WHERE "id" IN (SELECT x ->> 'rawId'
                                          FROM jsonb_array_elements(rows) x)),
                       ARRAY['first', 'third'],
                       'each rawId is its own body''s row');
END
$$;

-- a deadlock fails the whole call (the module sends each again alone)
DO $$
DECLARE
    e  jsonb := jsonb_build_array(pg_temp.msg('P11', 'wamid.G4'));
BEGIN
    BEGIN
        PERFORM count(*) FROM metacloud_ingest_group(
                    ARRAY[convert_to('fourth', 'UTF8'),
                          convert_to('deadlock', 'UTF8')],
                    ARRAY[e::text, '[]'], ARRAY['{}', '{}']);
        RAISE EXCEPTION 'not ok: a deadlock must fail the call';
    EXCEPTION WHEN deadlock_detected THEN
        NULL;
    END;
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_messages
                         WHERE "wamid" = 'wamid.G4'), 0::bigint,
                       'a deadlock: nothing of the group kept');

    BEGIN
        PERFORM count(*) FROM metacloud_ingest_group(
                    ARRAY[convert_to('x', 'UTF8')], ARRAY['[]', '[]'],
                    ARRAY['{}']);
        RAISE EXCEPTION 'not ok: arrays of different lengths';
    EXCEPTION WHEN raise_exception THEN
        PERFORM pg_temp.is(SQLERRM LIKE '%1 bodies, 2 events, 1 infos%', true,
                           'arrays of different lengths: refused');
    END;
END
$$;

ROLLBACK;
