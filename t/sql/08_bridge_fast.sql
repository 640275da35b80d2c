-- The bridge's fast path (metacloud_bridge_prepare(), 004): a new message
-- gets its links in its own INSERT (no UPDATE of meta_cloud_messages); a
-- replaced hook is called at once (the per-step path); a reaction that
-- came before its target reaches the target's Message.
BEGIN;
\ir helpers.psql

SELECT metacloud_add_phone_number('org-08', 'P08', 'WABA-P08', 't');

DO $$
DECLARE
    ids   text[];
    upd0  int;
BEGIN
    -- the reaction first: it waits for its target
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('P08', 'wamid.R1',
        '{"message": {"type": "REACTION", "rawType": "reaction",
                      "reactionEmoji": "+1",
                      "reactionMessageId": "wamid.F1"}}')));
    -- (a reaction takes the per-step path: its links by an UPDATE)
    SELECT n_tup_upd INTO upd0 FROM pg_stat_xact_user_tables
     WHERE relid = 'meta_cloud_messages'::regclass;

    PERFORM pg_temp.ingest(jsonb_build_array(
        pg_temp.msg('P08', 'wamid.F1'), pg_temp.msg('P08', 'wamid.F2')));
    PERFORM pg_temp.is((SELECT n_tup_upd FROM pg_stat_xact_user_tables
                         WHERE relid = 'meta_cloud_messages'::regclass)::int,
                       upd0, 'fast path: the links came with the INSERT');

    SELECT array_agg(ROW(c."leadId", c."conversationId", c."ticketId")::text
                     ORDER BY c."wamid")
      INTO ids FROM meta_cloud_messages c
     WHERE c."wamid" IN ('wamid.F1', 'wamid.F2')
       AND c."leadId" IS NOT NULL AND c."messageId" IS NOT NULL;
    PERFORM pg_temp.is(cardinality(ids), 2, 'both linked');
    PERFORM pg_temp.is(ids[1], ids[2], 'one lead, conversation, ticket');
    PERFORM pg_temp.is((SELECT m."reaction" FROM "Message" m
                          JOIN meta_cloud_messages c ON c."messageId" = m."id"
                         WHERE c."wamid" = 'wamid.F1'), '+1',
                       'the early reaction reached its target');
END
$$;

-- a platform's ticket rule: no ticket, ever
CREATE OR REPLACE FUNCTION metacloud_bridge_ticket(p_org text,
    p_conversation text, p_open boolean)
RETURNS text LANGUAGE sql AS $f$ SELECT NULL::text $f$;

DO $$
BEGIN
    PERFORM pg_temp.ingest(jsonb_build_array(pg_temp.msg('P08', 'wamid.S1',
        '{"message": {"from": "16505559999"}}')));
    PERFORM pg_temp.is((SELECT ROW(c."leadId" IS NOT NULL, c."ticketId")::text
                          FROM meta_cloud_messages c
                         WHERE c."wamid" = 'wamid.S1'),
                       ROW(true, NULL::text)::text,
                       'a replaced hook is called at once');
END
$$;

ROLLBACK;
