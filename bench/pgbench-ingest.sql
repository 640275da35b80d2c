-- bench/pgbench-ingest.sql: one webhook delivery per transaction, as the
-- nginx module sends it: metacloud_ingest(raw body, events, info) with one
-- text message (t/fixtures/meta_text.json, events exactly as
-- `build/core/metacloud-normalize --compact` prints them), its wamid made
-- unique by the client id and a random 63-bit number, so every call takes
-- the insert path (never the duplicate one); the sender one of :contacts
-- contacts (pgbench -D contacts=N; bench/pgbench-ingest.sh sets a million
-- by default, as bench/gen-bodies.pl: nearly every message is a first one,
-- the bridge makes a lead, a conversation and a ticket for it).  (": false", not ":false":
-- pgbench would take ":false" for a variable.)  Run by bench/pgbench-ingest.sh.
\set r random(1, 9223372036854775806)
\set c random(0, :contacts - 1)
SELECT metacloud_ingest(
  convert_to('{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"' || f || '"}],"messages":[{"from":"' || f || '","id":"' || w || '","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"}}]},"field":"messages"}]}]}', 'UTF8'),
  ('[{"v":1,"field":"messages","eventType":"message","scope":"106540352242922","webhookId":"msg:' || w || '","wabaId":"102290129340398","phoneNumberId":"106540352242922","displayPhoneNumber":"15550783881","entryIndex":0,"changeIndex":0,"itemIndex":0,"payload":{"from":"' || f || '","id":"' || w || '","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"}},"message":{"wamid":"' || w || '","direction":"INBOUND","source":"webhook","from":"' || f || '","type":"TEXT","rawType":"text","timestamp":1749416383,"text":"Does it come in another color?","contactName":"Sheena Nelson","contactWaId":"' || f || '","isForwarded": false,"isFrequentlyForwarded": false,"forwardedCount":0},"contact":{"waId":"' || f || '","name":"Sheena Nelson"}}]')::jsonb,
  '{"outcome":"ok","error": null,"signatureChecked": true}'::jsonb)
  FROM (SELECT 'wamid.bench.' || :client_id::text || '.' || :r::text AS w,
               '5511' || lpad(:c::text, 9, '0') AS f) AS u;
