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
--
-- Two groups that share people could take the same locks crosswise (each
-- delivery locks its (number, wamid) and its person's lead): the
-- deliveries run in the order of their person, so two groups take those
-- locks in one order.  The rows come back in the order given ("ord").

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_ingest_group() -------------------------------------------------
-- bodies, events and infos are metacloud_ingest()'s three arguments, one
-- element per delivery (events and infos as text: the module sends the
-- arrays in binary, and text elements need no conversion there).

CREATE OR REPLACE FUNCTION metacloud_ingest_group(bodies bytea[],
    events text[], infos text[])
RETURNS TABLE (ord int, error text, result jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
-- as metacloud_ingest(): the rows skip the pending-status trigger (003)
SET metacloud.ingest = 'on'
AS $$
DECLARE
    v_events  jsonb[];
BEGIN
    IF cardinality(bodies) IS DISTINCT FROM cardinality(events)
       OR cardinality(bodies) IS DISTINCT FROM cardinality(infos)
    THEN
        RAISE EXCEPTION 'metacloud_ingest_group(): % bodies, % events, '
                        '% infos', cardinality(bodies), cardinality(events),
                        cardinality(infos);
    END IF;

    v_events := events::jsonb[];

    FOR ord IN
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
                  i
    LOOP
        BEGIN
            result := metacloud_ingest_one(bodies[ord], v_events[ord],
                                           coalesce(infos[ord], '{}')::jsonb);
            error := NULL;
        EXCEPTION
            WHEN transaction_rollback OR lock_not_available
                 OR insufficient_resources OR operator_intervention
                 OR system_error THEN
                RAISE;
            WHEN OTHERS THEN
                result := NULL;
                error := SQLERRM;
        END;

        RETURN NEXT;
    END LOOP;
END
$$;


REVOKE ALL ON FUNCTION metacloud_ingest_group(bytea[], text[], text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION metacloud_ingest_group(bytea[], text[], text[])
    TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (11, 'metacloud_ingest_group')
ON CONFLICT (version) DO NOTHING;
