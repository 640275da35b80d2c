-- 005_metacloud_media.sql
--
-- The media download queue (DESIGN.md 6): meta_cloud_media rows are the
-- durable queue, claimed by the module's workers with FOR UPDATE SKIP LOCKED
-- and a lease ("leaseUntil"), so that several workers and several nginx
-- machines on one database download each file once, and a worker that
-- dies (kill -9, a reload that stops it) leaves nothing stuck: its lease
-- expires and the row is claimed again.
--
--   metacloud_media_claim(ids, limit, lease, max_attempts)   claim jobs
--   metacloud_media_done(id, attempt, provider, key, ...)    DOWNLOADED
--   metacloud_media_fail(id, attempt, error, expired, ...)   back-off,
--                                                             FAILED, EXPIRED
--   metacloud_media_token(phone_number_id)                   the bearer token
--
-- The columns ("nextAttemptAt", "leaseUntil", "downloadAttempts",
-- "lastDownloadAttempt", "downloadError", "storage*") are in 002.
--
-- An attempt is counted when it is claimed: a file that kills its worker
-- every time ends FAILED instead of being claimed forever.  The attempt
-- number is also the claim's token: a worker whose lease expired (and whose
-- row another worker claimed since) cannot overwrite the newer attempt.

CREATE TABLE IF NOT EXISTS metacloud_schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    PERFORM set_config('search_path',
                       format('%I, pg_temp', current_schema()), false);
END
$$;


-- Claimable rows: PENDING and due, or DOWNLOADING with an expired lease.
-- Small: rows leave it as soon as they are DOWNLOADED, FAILED or EXPIRED.
-- A table the PRD's Prisma migration created still has "createdAt" as a
-- timestamp without time zone here (006 converts it), and mixing the two
-- kinds is not immutable: 006 then creates the index.
DO $$
BEGIN
    IF (SELECT count(*) FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND table_name = 'meta_cloud_media'
           AND column_name IN ('nextAttemptAt', 'createdAt')
           AND data_type = 'timestamp with time zone') = 2
    THEN
        CREATE INDEX IF NOT EXISTS "meta_cloud_media_queue_idx"
            ON meta_cloud_media ((coalesce("nextAttemptAt", "createdAt")))
            WHERE "status" IN ('PENDING', 'DOWNLOADING');
    END IF;
END
$$;


-- metacloud_media_token() ------------------------------------------------
-- The access token of the number that received the media.  Never logged by
-- the module, never written to an error column.

CREATE OR REPLACE FUNCTION metacloud_media_token(p_phone_number_id text)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    SELECT "accessToken" FROM "MetaWhatsAppCredential"
     WHERE "phoneNumberId" = p_phone_number_id
$$;


-- metacloud_media_claim() ------------------------------------------------
-- Claims up to p_limit jobs for one worker: the rows p_ids names (media
-- just ingested), or, with p_ids NULL, any due row (the sweep).  Each
-- claimed row becomes DOWNLOADING with a lease of p_lease and one more
-- attempt.  A row whose lease expired on its last allowed attempt (its
-- worker died every time) becomes FAILED instead.
--
-- "url" is the webhook's own download URL while it is fresh (Meta's URLs
-- live 5 minutes: 4 minutes leave room for the transfer), else NULL: the
-- worker looks a fresh one up.  "day" is the UTC date of the storage key.

CREATE OR REPLACE FUNCTION metacloud_media_claim(p_ids text[], p_limit int,
    p_lease interval, p_max_attempts int)
RETURNS TABLE (id text, media_id text, organization_id text,
               phone_number_id text, mime_type text, sha256 text, url text,
               day text, attempt int, token text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE meta_cloud_media m
       SET "status" = 'FAILED', "leaseUntil" = NULL, "nextAttemptAt" = NULL,
           "downloadError" = 'worker lost during the last attempt',
           "updatedAt" = now()
     WHERE m."id" IN (
            SELECT f."id" FROM meta_cloud_media f
             WHERE f."status" = 'DOWNLOADING' AND f."leaseUntil" < now()
               AND f."downloadAttempts" >= p_max_attempts
               AND (p_ids IS NULL OR f."id" = ANY (p_ids))
             FOR UPDATE SKIP LOCKED);

    RETURN QUERY
    WITH c AS (
        SELECT q."id" FROM meta_cloud_media q
         WHERE (p_ids IS NULL OR q."id" = ANY (p_ids))
           AND q."status" IN ('PENDING', 'DOWNLOADING')
           -- a new row is due at once: not compared with its
           -- "createdAt", which timestamptz(3) may round past now()
           AND CASE q."status"
                   WHEN 'PENDING'
                   THEN q."nextAttemptAt" IS NULL OR q."nextAttemptAt" <= now()
                   ELSE q."leaseUntil" < now()
               END
         ORDER BY coalesce(q."nextAttemptAt", q."createdAt")
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE meta_cloud_media m
       SET "status" = 'DOWNLOADING',
           "leaseUntil" = now() + p_lease,
           "downloadAttempts" = m."downloadAttempts" + 1,
           "lastDownloadAttempt" = now(),
           "updatedAt" = now()
      FROM c
     WHERE m."id" = c."id"
    RETURNING m."id", m."mediaId", m."organizationId", m."phoneNumberId",
              m."mimeType", m."sha256",
              CASE WHEN m."createdAt" > now() - interval '4 minutes'
                   THEN m."downloadUrl" END,
              to_char(m."createdAt" AT TIME ZONE 'UTC', 'YYYY/MM/DD'),
              m."downloadAttempts",
              metacloud_media_token(m."phoneNumberId");
END
$$;


-- metacloud_media_done() -------------------------------------------------
-- Records a stored file.  Returns false when the attempt is no longer the
-- row's (its lease expired and another worker claimed it): the newer
-- attempt records its own result.  "mimeType" keeps the webhook's, and
-- takes the lookup's when the webhook had none.

CREATE OR REPLACE FUNCTION metacloud_media_done(p_id text, p_attempt int,
    p_provider text, p_key text, p_bucket text, p_url text, p_size bigint,
    p_mime text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE meta_cloud_media
       SET "status" = 'DOWNLOADED',
           "storageProvider" = p_provider, "storageKey" = p_key,
           "storageBucket" = p_bucket, "storageUrl" = p_url,
           "sizeBytes" = p_size,
           "mimeType" = coalesce(nullif("mimeType", ''), p_mime),
           "downloadError" = NULL, "leaseUntil" = NULL,
           "nextAttemptAt" = NULL, "updatedAt" = now()
     WHERE "id" = p_id AND "status" = 'DOWNLOADING'
       AND "downloadAttempts" = p_attempt;
    RETURN FOUND;
END
$$;


-- metacloud_media_fail() -------------------------------------------------
-- Records a failed attempt: EXPIRED at once when the media id is gone
-- (p_expired), FAILED after p_max_attempts, else PENDING again, due after
-- p_backoff * 2^(attempt - 1), at most a day.  The error is cut to 200
-- characters (the module never puts a token in it).  Returns the row's
-- new status, or NULL when the attempt is no longer the row's.

CREATE OR REPLACE FUNCTION metacloud_media_fail(p_id text, p_attempt int,
    p_error text, p_expired boolean, p_max_attempts int, p_backoff interval)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_status  "MetaCloudMediaStatus";
BEGIN
    v_status := CASE WHEN p_expired THEN 'EXPIRED'
                     WHEN p_attempt >= p_max_attempts THEN 'FAILED'
                     ELSE 'PENDING' END;

    UPDATE meta_cloud_media
       SET "status" = v_status,
           "downloadError" = left(p_error, 200),
           "leaseUntil" = NULL,
           "nextAttemptAt" = CASE WHEN v_status = 'PENDING'
               THEN now() + least(p_backoff * power(2, least(p_attempt - 1, 20)),
                                  interval '1 day') END,
           "updatedAt" = now()
     WHERE "id" = p_id AND "status" = 'DOWNLOADING'
       AND "downloadAttempts" = p_attempt;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN v_status::text;
END
$$;


-- Privileges: the module's role may run these four, nothing else.

REVOKE ALL ON FUNCTION metacloud_media_token(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_media_claim(text[], int, interval, int)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_media_done(text, int, text, text, text,
    text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metacloud_media_fail(text, int, text, boolean, int,
    interval) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION metacloud_media_token(text) TO metacloud_module;
GRANT EXECUTE ON FUNCTION metacloud_media_claim(text[], int, interval, int)
    TO metacloud_module;
GRANT EXECUTE ON FUNCTION metacloud_media_done(text, int, text, text, text,
    text, bigint, text) TO metacloud_module;
GRANT EXECUTE ON FUNCTION metacloud_media_fail(text, int, text, boolean, int,
    interval) TO metacloud_module;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (5, 'metacloud_media')
ON CONFLICT (version) DO NOTHING;
