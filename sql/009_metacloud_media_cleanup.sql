-- 009_metacloud_media_cleanup.sql: the media workers drain
-- meta_cloud_media_deletions (006): files of deleted media rows removed
-- from their storage (docs/SQL.md, "Operations"; docs/MEDIA.md).
--
--   metacloud_media_cleanup_claim(limit, lease)   claim due deletions
--   metacloud_media_cleanup_done(ids, attempts, errors, backoff)
--                                                 a batch's results: a
--                                                 removed file's row goes,
--                                                 a failed one backs off
--
-- Both are SECURITY DEFINER: metacloud_module may run them and has no
-- privilege on the table itself.

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- metacloud_media_cleanup_claim() ------------------------------------------
-- Up to p_limit due rows (never tried, back-off over, or a lease expired:
-- its worker died), oldest first, leased for p_lease with one more
-- attempt.  Rows another worker holds are skipped (SKIP LOCKED).

CREATE OR REPLACE FUNCTION metacloud_media_cleanup_claim(p_limit int,
    p_lease interval)
RETURNS TABLE (id text, media_id text, provider text, bucket text,
               key text, attempt int)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
    WITH c AS (
        SELECT q."id" FROM meta_cloud_media_deletions q
         WHERE (q."nextAttemptAt" IS NULL OR q."nextAttemptAt" <= now())
           AND (q."leaseUntil" IS NULL OR q."leaseUntil" < now())
         ORDER BY coalesce(q."nextAttemptAt", q."requestedAt")
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE meta_cloud_media_deletions d
       SET "leaseUntil" = now() + p_lease,
           "attempts" = d."attempts" + 1
      FROM c
     WHERE d."id" = c."id"
    RETURNING d."id", d."mediaId", d."storageProvider", d."storageBucket",
              d."storageKey", d."attempts";
END
$$;


-- metacloud_media_cleanup_done() -------------------------------------------
-- The results of one batch, element by element: a NULL error means the
-- file is gone (removed, or missing already) and the row is deleted;
-- otherwise the error is kept and the row is due again after p_backoff
-- times its attempts (at most 64 times).  A result for an attempt that
-- is no longer the row's (its lease expired and another worker claimed
-- it) is ignored.  Returns the rows deleted.

CREATE OR REPLACE FUNCTION metacloud_media_cleanup_done(p_ids text[],
    p_attempts int[], p_errors text[], p_backoff interval)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    n int;
BEGIN
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_errors)
                 AS r(id, attempt, error)
    ), gone AS (
        DELETE FROM meta_cloud_media_deletions d
         USING r
         WHERE d."id" = r.id AND d."attempts" = r.attempt
           AND r.error IS NULL
        RETURNING 1
    )
    SELECT count(*) INTO n FROM gone;

    UPDATE meta_cloud_media_deletions d
       SET "error" = r.error, "leaseUntil" = NULL,
           "nextAttemptAt" = now() + p_backoff * least(d."attempts", 64)
      FROM unnest(p_ids, p_attempts, p_errors) AS r(id, attempt, error)
     WHERE d."id" = r.id AND d."attempts" = r.attempt
       AND r.error IS NOT NULL;

    RETURN n;
END
$$;


-- Privileges: the module's role may run these two, nothing else.

REVOKE ALL ON FUNCTION metacloud_media_cleanup_claim(int, interval)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_media_cleanup_done(text[], int[], text[],
    interval) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION metacloud_media_cleanup_claim(int, interval)
    TO metacloud_module;
GRANT EXECUTE ON FUNCTION metacloud_media_cleanup_done(text[], int[], text[],
    interval) TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (9, 'metacloud_media_cleanup')
ON CONFLICT (version) DO NOTHING;
