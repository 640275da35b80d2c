-- The lead lookup (metacloud_bridge_leads_of(), sql/004) as the module's
-- pooled sessions plan it on a fresh database: a generic plan made while
-- "Lead" is empty.  It must find the person through the two indexes, each
-- with both of its columns, and never read the organisation's leads one
-- by one (what the OR it replaced did until the first ANALYZE).  And it
-- finds a lead by either key.
BEGIN;
\ir helpers.psql

SET LOCAL plan_cache_mode = force_generic_plan;

PREPARE lookup(text, text, text) AS
    SELECT x."id" FROM metacloud_bridge_leads_of($1, $2, $3) x
     ORDER BY x."createdAt", x."id" LIMIT 1;

DO $$
DECLARE
    plan   jsonb;
    scans  text[];
BEGIN
    PERFORM pg_temp.is((SELECT count(*) FROM "Lead"), 0::bigint,
                       'no lead yet');
    EXECUTE 'EXPLAIN (FORMAT JSON) EXECUTE lookup(''org-13'', ''1300'', NULL)'
       INTO plan;

    -- each node that reads "Lead": its type and index condition
    SELECT array_agg(format('%s %s', n ->> 'Node Type', n ->> 'Index Cond')
                     ORDER BY n ->> 'Index Cond')
      INTO scans
      FROM jsonb_path_query(plan, 'strict $.**') AS n
     WHERE jsonb_typeof(n) = 'object' AND n ->> 'Relation Name' = 'Lead';

    PERFORM pg_temp.is(scans,
        ARRAY['Index Scan (("organizationId" = $1) AND ("userId" = $3))',
              'Index Scan (("organizationId" = $1) AND (phone = $2))'],
        'the generic plan on an empty "Lead": ' || plan::text);
END
$$;

-- by phone, by user id, by both; the oldest first
INSERT INTO "Organization" ("id", "name", "updatedAt")
VALUES ('org-13', 'org-13', now()), ('org-13b', 'org-13b', now());
INSERT INTO "Lead" ("id", "organizationId", "phone", "userId", "createdAt",
                    "updatedAt")
VALUES ('lead-13-a', 'org-13', '1300', NULL, now() - interval '2 min', now()),
       ('lead-13-b', 'org-13', NULL, 'US.13', now() - interval '1 min', now()),
       ('lead-13-c', 'org-13b', '1300', 'US.13', now() - interval '3 min', now());

DO $$
DECLARE
    v  text;
BEGIN
    EXECUTE 'EXECUTE lookup(''org-13'', ''1300'', NULL)' INTO v;
    PERFORM pg_temp.is(v, 'lead-13-a', 'by phone');
    EXECUTE 'EXECUTE lookup(''org-13'', NULL, ''US.13'')' INTO v;
    PERFORM pg_temp.is(v, 'lead-13-b', 'by user id');
    EXECUTE 'EXECUTE lookup(''org-13'', ''1300'', ''US.13'')' INTO v;
    PERFORM pg_temp.is(v, 'lead-13-a', 'by both: the older');
    EXECUTE 'EXECUTE lookup(''org-13'', ''1399'', ''US.99'')' INTO v;
    PERFORM pg_temp.is(v, NULL, 'nobody');
END
$$;

ROLLBACK;
