-- The file removal queue (009): a claim leases due rows with one more
-- attempt and skips leased ones; a NULL error deletes the row, an error
-- backs off by attempts; a result of a superseded attempt is ignored; an
-- expired lease makes the row claimable again.  now() is fixed inside this
-- transaction: time passing is simulated by moving times into the past
-- (timestamptz(3) rounds: times are compared within a second).
BEGIN;
\ir helpers.psql

DO $$
DECLARE
    n    int;
    a    text;
    b    text;
    c    record;
BEGIN
    DELETE FROM meta_cloud_media_deletions;
    INSERT INTO meta_cloud_media_deletions
           ("mediaId", "storageProvider", "storageKey", "reason",
            "requestedAt")
    VALUES ('D-1', 'local', 'o/2020/01/01/D-1.jpg', 'test',
            now() - interval '2 minutes'),
           ('D-2', 's3', 'p/o/2020/01/01/D-2.jpg', 'test',
            now() - interval '1 minute');

    SELECT count(*) INTO n FROM metacloud_media_cleanup_claim(1, '1 minute');
    PERFORM pg_temp.is(n, 1, 'a claim takes at most its limit');
    SELECT id INTO a FROM meta_cloud_media_deletions WHERE "mediaId" = 'D-1';
    PERFORM pg_temp.is((SELECT "leaseUntil" - now() BETWEEN '59 s' AND '61 s'
                               AND attempts = 1
                          FROM meta_cloud_media_deletions WHERE id = a),
                       true, 'the oldest first, leased, attempt 1');

    FOR c IN SELECT * FROM metacloud_media_cleanup_claim(10, '1 minute') LOOP
        PERFORM pg_temp.is(c.media_id || ' ' || c.provider || ' ' || c.key
                           || ' ' || c.attempt,
                           'D-2 s3 p/o/2020/01/01/D-2.jpg 1',
                           'a leased row is skipped, the other claimed');
        b := c.id;
    END LOOP;
    PERFORM pg_temp.is(b IS NOT NULL, true, 'D-2 claimed');

    -- D-1 failed, D-2 removed; a result for an old attempt changes nothing
    PERFORM pg_temp.is(metacloud_media_cleanup_done(ARRAY[a, b], ARRAY[1, 1],
                           ARRAY['unlink() failed: EIO', NULL], '1 minute'),
                       1, 'one row done');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_media_deletions
                         WHERE id = b)::int, 0, 'the removed file''s row goes');
    PERFORM pg_temp.is((SELECT error || ' ' || ("nextAttemptAt" - now()
                                                BETWEEN '59 s' AND '61 s')
                               || ' ' || ("leaseUntil" IS NULL)
                          FROM meta_cloud_media_deletions WHERE id = a),
                       'unlink() failed: EIO true true',
                       'the failed one keeps its error and backs off');

    SELECT count(*) INTO n FROM metacloud_media_cleanup_claim(10, '1 minute');
    PERFORM pg_temp.is(n, 0, 'nothing due during the back-off');

    UPDATE meta_cloud_media_deletions
       SET "nextAttemptAt" = now() - interval '1 second' WHERE id = a;
    SELECT count(*) INTO n FROM metacloud_media_cleanup_claim(10, '1 minute');
    PERFORM pg_temp.is(n, 1, 'due again after the back-off: attempt 2');

    -- the worker of attempt 2 died: its lease expires, attempt 3 is claimed
    UPDATE meta_cloud_media_deletions
       SET "leaseUntil" = now() - interval '1 second' WHERE id = a;
    SELECT count(*) INTO n FROM metacloud_media_cleanup_claim(10, '1 minute');
    PERFORM pg_temp.is(n, 1, 'an expired lease: claimed again');

    PERFORM pg_temp.is(metacloud_media_cleanup_done(ARRAY[a], ARRAY[2],
                           ARRAY[NULL::text], '1 minute'),
                       0, 'the late result of attempt 2 is ignored');
    PERFORM pg_temp.is((SELECT attempts FROM meta_cloud_media_deletions
                         WHERE id = a), 3, 'the row stays with attempt 3');

    PERFORM metacloud_media_cleanup_done(ARRAY[a], ARRAY[3],
                                         ARRAY['s3: DELETE answered HTTP 403'],
                                         '1 minute');
    PERFORM pg_temp.is((SELECT "nextAttemptAt" - now() BETWEEN '179 s' AND '181 s'
                          FROM meta_cloud_media_deletions WHERE id = a),
                       true, 'the back-off grows with the attempts');
END
$$;

ROLLBACK;
