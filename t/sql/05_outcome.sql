-- A signed body that is not a webhook: only the raw row, with its outcome;
-- the defaults of the third parameter.
BEGIN;
\ir helpers.psql

DO $$
DECLARE
    body  bytea := '\x7b226f626a656374223a2022706167652200ff'::bytea;  -- not UTF-8
    res   jsonb;
    rq    meta_cloud_webhook_requests;
    n     bigint := (SELECT count(*) FROM meta_cloud_webhook_events);
BEGIN
    res := metacloud_ingest(body,
        jsonb_build_array(pg_temp.msg('P05', 'wamid.X')),  -- must be ignored
        '{"outcome": "invalid_json", "error": "bad byte at 17",
          "signatureChecked": true}');
    PERFORM pg_temp.is((res ->> 'inserted')::int, 0, 'nothing inserted');
    PERFORM pg_temp.is(jsonb_array_length(res -> 'media'), 0, 'no media');
    PERFORM pg_temp.is((SELECT count(*) FROM meta_cloud_webhook_events), n,
                       'no event stored');
    SELECT * INTO STRICT rq FROM meta_cloud_webhook_requests
     WHERE id = res ->> 'rawId';
    PERFORM pg_temp.is(rq."body", body, 'raw body exact');
    PERFORM pg_temp.is(rq."outcome", 'invalid_json', 'outcome');
    PERFORM pg_temp.is(rq."error", 'bad byte at 17', 'error');
    PERFORM pg_temp.is(rq."signatureChecked", true, 'signatureChecked');
    PERFORM pg_temp.is(rq."eventCount", 0, 'eventCount');

    res := metacloud_ingest('{"object":"page","entry":[]}'::bytea, '[]',
        '{"outcome": "other_object", "error": "object is page"}');
    PERFORM pg_temp.is((SELECT outcome FROM meta_cloud_webhook_requests
                         WHERE id = res ->> 'rawId'), 'other_object',
                       'other_object');

    -- two parameters: outcome ok, signature not checked
    res := metacloud_ingest('{}'::bytea, '[]');
    SELECT * INTO STRICT rq FROM meta_cloud_webhook_requests
     WHERE id = res ->> 'rawId';
    PERFORM pg_temp.is(rq."outcome", 'ok', 'default outcome');
    PERFORM pg_temp.is(rq."signatureChecked", false, 'default signatureChecked');
    PERFORM pg_temp.is(res ->> 'inserted', '0', 'empty batch');
    PERFORM pg_temp.is(res -> 'media', '[]'::jsonb, 'empty media');

    -- events that are not an array: raw kept, said why
    res := metacloud_ingest('{}'::bytea, '{"oops": 1}');
    PERFORM pg_temp.is((SELECT error FROM meta_cloud_webhook_requests
                         WHERE id = res ->> 'rawId'),
                       'events is not a JSON array', 'non-array events');
END
$$;

ROLLBACK;
