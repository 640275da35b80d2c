-- bench/pgbench-status.sql: one webhook delivery of 50 statuses per
-- transaction, as the module sends it: metacloud_ingest(raw body, events,
-- info), events as `build/core/metacloud-normalize --compact` prints them.
-- Each status is for one of :messages outbound messages seeded beforehand
-- (wamid.BENCHS000000000001 ...: bench/pgbench-ingest.sh --statuses seeds
-- them), with a random status of sent, delivered and read, and a webhookId
-- made unique by the client id and a random number, so that every event
-- takes the insert path and the ladder is exercised.  Run by
-- bench/pgbench-ingest.sh with BENCH_SCRIPT=status.
\set r random(1, 9223372036854775806)
SELECT metacloud_ingest(
  convert_to(ev::text, 'UTF8'), ev,
  '{"outcome":"ok","error": null,"signatureChecked": true}'::jsonb)
  FROM (SELECT jsonb_agg(jsonb_build_object(
          'v', 1, 'field', 'messages', 'eventType', 'status',
          'scope', '106540352242922',
          'webhookId', format('status:%s:%s:%s.%s', w, lower(st), :client_id::int, :r::bigint || '.' || i),
          'wabaId', '102290129340398', 'phoneNumberId', '106540352242922',
          'displayPhoneNumber', '15550783881', 'entryIndex', 0,
          'changeIndex', 0, 'itemIndex', i - 1,
          'payload', jsonb_build_object('id', w, 'status', lower(st),
                                        'timestamp', '1749416383',
                                        'recipient_id', '5511000000001',
                                        'pricing', jsonb_build_object(
                                            'billable', true,
                                            'pricing_model', 'PMP',
                                            'category', 'utility')),
          'status', jsonb_build_object('wamid', w, 'status', st,
                                       'statusRaw', lower(st),
                                       'timestamp', 1749416383 + i,
                                       'recipientId', '5511000000001',
                                       'pricingModel', 'PMP',
                                       'pricingCategory', 'utility',
                                       'billable', true)) ORDER BY i) AS ev
          FROM (SELECT i,
                       format('wamid.BENCHS%s', lpad((1 + (:r::bigint + i * 7919) % :messages::bigint)::text, 12, '0')) AS w,
                       (ARRAY['SENT', 'DELIVERED', 'READ'])[1 + (:r::bigint + i) % 3] AS st
                  FROM generate_series(1, 50) AS i) AS s) AS b;
