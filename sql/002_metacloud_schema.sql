-- 002_metacloud_schema.sql
--
-- The module's tables: the four Prisma models of PRD.md (mapped table names,
-- quoted camelCase columns, Prisma enum types, text ids) plus the
-- amendments of docs/DESIGN.md section 4, and the raw-request table.
--
-- Written as "PRD model first, then amendments": each table is created in
-- the PRD's shape when missing, then altered to the module's shape.  So the
-- same file also upgrades a database where the PRD's Prisma migration
-- already created the tables, and re-running it changes nothing.
--
-- Depends on the platform tables only through their "id" columns
-- ("Organization", "Lead", "Conversation", "Ticket", "Message").
--
-- Timestamps are timestamptz(3) (Prisma: @db.Timestamptz(3)): millisecond
-- precision like Prisma's DateTime, but with a time zone, so that
-- to_timestamp() of Meta's Unix seconds never depends on the session's
-- TimeZone.

CREATE TABLE IF NOT EXISTS metacloud_schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);


-- metacloud_new_id() -------------------------------------------------------
--
-- The id of every row the module makes: a UUID of version 7 (RFC 9562),
-- text like gen_random_uuid()::text, 48 bits of Unix time in milliseconds
-- first, then random bits.  Ids made one after another sort together, so
-- a new row's key goes to the right end of its primary key and of the
-- indexes on the columns that link to it, pages already in memory, and not
-- to a random leaf of an index larger than shared_buffers (read, dirtied,
-- written again, and a full-page image after each checkpoint).  Measured:
-- 9% less backend CPU a text delivery, the gap growing with the tables
-- (docs/SQL.md, "Ids").  SQL without FROM: the planner inlines it.
-- Executable by PUBLIC, as gen_random_uuid() is: it is the tables' "id"
-- default, for whoever inserts.

CREATE OR REPLACE FUNCTION metacloud_new_id()
RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
               set_bit(set_bit(                  -- version 4 -> 7
                   overlay(uuid_send(gen_random_uuid())
                           PLACING substring(int8send(floor(
                               extract(epoch FROM clock_timestamp())
                               * 1000)::bigint) FROM 3)
                           FROM 1 FOR 6),
                   52, 1), 53, 1),
               'hex')::uuid::text
$$;


-- Enums ------------------------------------------------------------------
--
-- Created with the PRD's values when missing; the values the real payloads
-- need are added afterwards (ADD VALUE IF NOT EXISTS is idempotent).  An enum
-- cannot hold a string it does not list, so every enum column has a text
-- companion ("rawType", "statusRaw") keeping Meta's original string.

DO $$
BEGIN
    IF to_regtype('"MetaCloudMessageType"') IS NULL THEN
        CREATE TYPE "MetaCloudMessageType" AS ENUM (
            'TEXT', 'IMAGE', 'VIDEO', 'AUDIO', 'DOCUMENT', 'STICKER',
            'LOCATION', 'CONTACTS', 'BUTTON_REPLY', 'LIST_REPLY',
            'INTERACTIVE', 'REACTION', 'UNSUPPORTED');
    END IF;
    IF to_regtype('"MetaCloudMessageDirection"') IS NULL THEN
        CREATE TYPE "MetaCloudMessageDirection" AS ENUM ('INBOUND', 'OUTBOUND');
    END IF;
    IF to_regtype('"MetaCloudMediaType"') IS NULL THEN
        CREATE TYPE "MetaCloudMediaType" AS ENUM (
            'IMAGE', 'VIDEO', 'AUDIO', 'DOCUMENT', 'STICKER');
    END IF;
    IF to_regtype('"MetaCloudMediaStatus"') IS NULL THEN
        CREATE TYPE "MetaCloudMediaStatus" AS ENUM (
            'PENDING', 'DOWNLOADING', 'DOWNLOADED', 'FAILED', 'EXPIRED');
    END IF;
    IF to_regtype('"MetaCloudMessageStatusEnum"') IS NULL THEN
        CREATE TYPE "MetaCloudMessageStatusEnum" AS ENUM (
            'PENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED');
    END IF;
END
$$;

ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'BUTTON';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'ORDER';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'SYSTEM';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'REQUEST_WELCOME';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'EDIT';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'REVOKE';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'MEDIA_PLACEHOLDER';
ALTER TYPE "MetaCloudMessageType" ADD VALUE IF NOT EXISTS 'UNKNOWN';

ALTER TYPE "MetaCloudMessageStatusEnum" ADD VALUE IF NOT EXISTS 'PLAYED';
ALTER TYPE "MetaCloudMessageStatusEnum" ADD VALUE IF NOT EXISTS 'DELETED';
ALTER TYPE "MetaCloudMessageStatusEnum" ADD VALUE IF NOT EXISTS 'WARNING';
ALTER TYPE "MetaCloudMessageStatusEnum" ADD VALUE IF NOT EXISTS 'UNKNOWN';


-- Raw requests (new) -------------------------------------------------------
--
-- One row per delivery, the body byte for byte (the signature was computed
-- over exactly these bytes).  sha256 is indexed but NOT unique: Meta's
-- retries are byte-identical bodies and every delivery is kept.

CREATE TABLE IF NOT EXISTS meta_cloud_webhook_requests (
    "id"                text PRIMARY KEY DEFAULT metacloud_new_id(),
    "body"              bytea NOT NULL,
    "sha256"            bytea NOT NULL,
    "receivedAt"        timestamptz(3) NOT NULL DEFAULT now(),
    "outcome"           text NOT NULL DEFAULT 'ok',
                        -- ok | invalid_json | not_webhook | other_object
    "error"             text,
    "signatureChecked"  boolean NOT NULL DEFAULT false,
    "eventCount"        int NOT NULL DEFAULT 0,   -- events in the body
    "inserted"          int NOT NULL DEFAULT 0,   -- new events
    "duplicate"         int NOT NULL DEFAULT 0,   -- already known events
    "failed"            int NOT NULL DEFAULT 0,   -- new events that failed
    "unrouted"          int NOT NULL DEFAULT 0,   -- new events, number unknown
    "pending"           int NOT NULL DEFAULT 0    -- statuses waiting for
                                                  -- their message
);
CREATE INDEX IF NOT EXISTS meta_cloud_webhook_requests_sha256_idx
    ON meta_cloud_webhook_requests ("sha256");
-- append-only in time order: a BRIN index is tiny and costs nothing per row
CREATE INDEX IF NOT EXISTS meta_cloud_webhook_requests_receivedAt_brin
    ON meta_cloud_webhook_requests USING brin ("receivedAt");


-- MetaCloudWebhookEvent ----------------------------------------------------

CREATE TABLE IF NOT EXISTS meta_cloud_webhook_events (
    "id"              text PRIMARY KEY DEFAULT metacloud_new_id(),
    "webhookId"       text NOT NULL,
    "eventType"       text NOT NULL,
    "phoneNumberId"   text NOT NULL,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "processed"       boolean NOT NULL DEFAULT false,
    "processedAt"     timestamptz(3),
    "error"           text,
    "payload"         jsonb NOT NULL,
    "receivedAt"      timestamptz(3) NOT NULL DEFAULT now()
);

-- Amendments.  Account-level fields carry no phone number, and an event
-- whose number no organisation owns yet is kept "unrouted" (replayed by
-- metacloud_add_phone_number()): both columns become nullable.
ALTER TABLE meta_cloud_webhook_events
    ALTER COLUMN "phoneNumberId" DROP NOT NULL,
    ALTER COLUMN "organizationId" DROP NOT NULL,
    -- value.metadata.phone_number_id, else 'waba:<entry.id>'
    ADD COLUMN IF NOT EXISTS "scope" text,
    ADD COLUMN IF NOT EXISTS "field" text,              -- changes[].field
    ADD COLUMN IF NOT EXISTS "wabaId" text,             -- entry.id
    ADD COLUMN IF NOT EXISTS "rawRequestId" text,       -- the delivery
    ADD COLUMN IF NOT EXISTS "unrouted" boolean NOT NULL DEFAULT false,
    -- the normalised event without its payload (kept once, in "payload"):
    -- event || {payload} replays it exactly
    ADD COLUMN IF NOT EXISTS "event" jsonb,
    ADD COLUMN IF NOT EXISTS "updatedAt" timestamptz(3) NOT NULL DEFAULT now();

-- Rows of the PRD's shape have no scope: their phone number is it.
UPDATE meta_cloud_webhook_events SET "scope" = "phoneNumberId"
 WHERE "scope" IS NULL;
ALTER TABLE meta_cloud_webhook_events ALTER COLUMN "scope" SET NOT NULL;

-- The key: unique per scope, never globally (docs/DESIGN.md 3).  The PRD's global
-- unique on webhookId would swallow a message seen by two of our numbers.
DROP INDEX IF EXISTS "meta_cloud_webhook_events_webhookId_key";
DROP INDEX IF EXISTS "meta_cloud_webhook_events_phoneNumberId_webhookId_key";
CREATE UNIQUE INDEX IF NOT EXISTS "meta_cloud_webhook_events_scope_webhookId_key"
    ON meta_cloud_webhook_events ("scope", "webhookId");

-- The PRD's indexes on phoneNumberId and eventType are left out on purpose:
-- the key index leads with scope (= phoneNumberId) and eventType has a
-- handful of values; every index costs on each of the ~1,000 inserts/s.
-- The PRD's ("organizationId", "processed") gave every event an entry to
-- answer one question, which events of an organisation are not processed
-- (failed, unrouted after routing, waiting): a partial index answers it
-- with an entry only for those (docs/SQL.md, "Indexes").
DROP INDEX IF EXISTS "meta_cloud_webhook_events_organizationId_processed_idx";
CREATE INDEX IF NOT EXISTS "meta_cloud_webhook_events_organizationId_unprocessed_idx"
    ON meta_cloud_webhook_events ("organizationId", "receivedAt")
    WHERE NOT "processed";
CREATE INDEX IF NOT EXISTS "meta_cloud_webhook_events_receivedAt_brin"
    ON meta_cloud_webhook_events USING brin ("receivedAt");
CREATE INDEX IF NOT EXISTS "meta_cloud_webhook_events_rawRequestId_idx"
    ON meta_cloud_webhook_events ("rawRequestId");
-- metacloud_add_phone_number() replays a number's unrouted events
CREATE INDEX IF NOT EXISTS "meta_cloud_webhook_events_unrouted_idx"
    ON meta_cloud_webhook_events ("scope", "receivedAt") WHERE "unrouted";
-- statuses that arrived before their message, applied when it arrives;
-- small: a status leaves it as soon as it is processed
CREATE INDEX IF NOT EXISTS "meta_cloud_webhook_events_pending_status_idx"
    ON meta_cloud_webhook_events ("scope", (("event" -> 'status') ->> 'wamid'))
    WHERE "eventType" = 'status' AND NOT "processed" AND NOT "unrouted";


-- MetaCloudMedia -----------------------------------------------------------
-- (before the messages, which reference it)

CREATE TABLE IF NOT EXISTS meta_cloud_media (
    "id"                    text PRIMARY KEY DEFAULT metacloud_new_id(),
    "mediaId"               text NOT NULL,
    "sha256"                text,
    "type"                  "MetaCloudMediaType" NOT NULL,
    "mimeType"              text NOT NULL,
    "fileName"              text,
    "caption"               text,
    "sizeBytes"             int,
    "durationSeconds"       int,
    "width"                 int,
    "height"                int,
    "status"                "MetaCloudMediaStatus" NOT NULL DEFAULT 'PENDING',
    "downloadUrl"           text,
    "downloadUrlExpiresAt"  timestamptz(3),
    "storageProvider"       text,
    "storageKey"            text,
    "storageBucket"         text,
    "storageUrl"            text,
    "downloadAttempts"      int NOT NULL DEFAULT 0,
    "lastDownloadAttempt"   timestamptz(3),
    "downloadError"         text,
    "organizationId"        text NOT NULL
                            REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "createdAt"             timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"             timestamptz(3) NOT NULL DEFAULT now()
);

ALTER TABLE meta_cloud_media
    -- Meta does not promise a mime_type on every media object
    ALTER COLUMN "mimeType" DROP NOT NULL,
    -- the number that received it: its credential's token downloads it
    ADD COLUMN IF NOT EXISTS "phoneNumberId" text,
    ADD COLUMN IF NOT EXISTS "voice" boolean,        -- audio only
    ADD COLUMN IF NOT EXISTS "animated" boolean,     -- sticker only
    -- the media queue (docs/DESIGN.md 6): next try after a failure, and the
    -- lease of the worker that claimed the row (FOR UPDATE SKIP LOCKED)
    ADD COLUMN IF NOT EXISTS "nextAttemptAt" timestamptz(3),
    ADD COLUMN IF NOT EXISTS "leaseUntil" timestamptz(3);

-- Meta media ids are global: one row per media id, whoever saw it first.
CREATE UNIQUE INDEX IF NOT EXISTS "meta_cloud_media_mediaId_key"
    ON meta_cloud_media ("mediaId");
CREATE INDEX IF NOT EXISTS "meta_cloud_media_organizationId_idx"
    ON meta_cloud_media ("organizationId");
CREATE INDEX IF NOT EXISTS "meta_cloud_media_status_nextAttemptAt_idx"
    ON meta_cloud_media ("status", "nextAttemptAt");
CREATE INDEX IF NOT EXISTS "meta_cloud_media_downloadUrlExpiresAt_idx"
    ON meta_cloud_media ("downloadUrlExpiresAt")
    WHERE "downloadUrlExpiresAt" IS NOT NULL;


-- MetaCloudMessage ---------------------------------------------------------

CREATE TABLE IF NOT EXISTS meta_cloud_messages (
    "id"                 text PRIMARY KEY DEFAULT metacloud_new_id(),
    "wamid"              text NOT NULL,
    "organizationId"     text NOT NULL
                         REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "webhookEventId"     text REFERENCES meta_cloud_webhook_events ("id")
                         ON DELETE SET NULL,
    "phoneNumberId"      text NOT NULL,
    "direction"          "MetaCloudMessageDirection" NOT NULL,
    "from"               text NOT NULL,
    "to"                 text,
    "type"               "MetaCloudMessageType" NOT NULL,
    "text"               text,
    "contactName"        text,
    "contactWaId"        text,
    "contextMessageId"   text,
    "isForwarded"        boolean NOT NULL DEFAULT false,
    "forwardedCount"     int NOT NULL DEFAULT 0,
    "mediaId"            text REFERENCES meta_cloud_media ("id")
                         ON DELETE SET NULL,
    "locationLatitude"   double precision,
    "locationLongitude"  double precision,
    "locationName"       text,
    "locationAddress"    text,
    "interactiveType"    text,
    "buttonPayload"      text,
    "buttonText"         text,
    "listId"             text,
    "listTitle"          text,
    "listDescription"    text,
    "reactionEmoji"      text,
    "reactionMessageId"  text,
    "rawMessageData"     jsonb,
    "timestamp"          text NOT NULL,
    "sentAt"             timestamptz(3) NOT NULL,
    "leadId"             text REFERENCES "Lead" ("id") ON DELETE SET NULL,
    "conversationId"     text REFERENCES "Conversation" ("id")
                         ON DELETE SET NULL,
    "ticketId"           text REFERENCES "Ticket" ("id") ON DELETE SET NULL,
    "messageId"          text REFERENCES "Message" ("id") ON DELETE SET NULL,
    "currentStatus"      "MetaCloudMessageStatusEnum" NOT NULL DEFAULT 'PENDING',
    "lastStatusUpdate"   timestamptz(3),
    "createdAt"          timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"          timestamptz(3) NOT NULL DEFAULT now()
);

-- Amendments: every key of the "message" sub-object of docs/EVENTS.md is a
-- column of the same name, so that jsonb_populate_record() fills a row in
-- one call.
ALTER TABLE meta_cloud_messages
    -- business-scoped user ids: "from" may be absent
    ALTER COLUMN "from" DROP NOT NULL,
    -- Meta's string; NULL when the event had no usable timestamp ("sentAt"
    -- then falls back to the time of receipt)
    ALTER COLUMN "timestamp" DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS "source" text,     -- webhook|echo|history|history_media
    ADD COLUMN IF NOT EXISTS "fromUserId" text,
    ADD COLUMN IF NOT EXISTS "fromParentUserId" text,
    ADD COLUMN IF NOT EXISTS "toUserId" text,
    ADD COLUMN IF NOT EXISTS "groupId" text,
    ADD COLUMN IF NOT EXISTS "rawType" text,    -- Meta's type string, verbatim
    ADD COLUMN IF NOT EXISTS "unsupportedType" text,
    ADD COLUMN IF NOT EXISTS "contactUserId" text,
    ADD COLUMN IF NOT EXISTS "contactUsername" text,
    ADD COLUMN IF NOT EXISTS "contextFrom" text,
    ADD COLUMN IF NOT EXISTS "isFrequentlyForwarded" boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS "referredProductCatalogId" text,
    ADD COLUMN IF NOT EXISTS "referredProductRetailerId" text,
    ADD COLUMN IF NOT EXISTS "locationUrl" text,
    ADD COLUMN IF NOT EXISTS "originalMessageId" text,  -- edit / revoke
    ADD COLUMN IF NOT EXISTS "errorCode" int,
    ADD COLUMN IF NOT EXISTS "errorTitle" text,
    ADD COLUMN IF NOT EXISTS "referral" jsonb,
    ADD COLUMN IF NOT EXISTS "historyStatus" text;

-- One row per (number, wamid): the same wamid is seen by both numbers when
-- two of the platform's numbers talk to each other, so the PRD's global
-- unique on wamid (and on organizationId + wamid) is replaced.
-- Every status raises "currentStatus" in place: room on each page lets
-- those updates be HOT (no new entry in any of the indexes below).
ALTER TABLE meta_cloud_messages SET (fillfactor = 80);

DROP INDEX IF EXISTS "meta_cloud_messages_wamid_key";
DROP INDEX IF EXISTS "meta_cloud_messages_organizationId_wamid_key";
CREATE UNIQUE INDEX IF NOT EXISTS "meta_cloud_messages_phoneNumberId_wamid_key"
    ON meta_cloud_messages ("phoneNumberId", "wamid");
-- Prisma's @unique on messageId; partial because it is mostly NULL
CREATE UNIQUE INDEX IF NOT EXISTS "meta_cloud_messages_messageId_key"
    ON meta_cloud_messages ("messageId") WHERE "messageId" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_organizationId_sentAt_idx"
    ON meta_cloud_messages ("organizationId", "sentAt");
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_from_idx"
    ON meta_cloud_messages ("from") WHERE "from" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_to_idx"
    ON meta_cloud_messages ("to") WHERE "to" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_fromUserId_idx"
    ON meta_cloud_messages ("fromUserId") WHERE "fromUserId" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_leadId_idx"
    ON meta_cloud_messages ("leadId") WHERE "leadId" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_conversationId_idx"
    ON meta_cloud_messages ("conversationId") WHERE "conversationId" IS NOT NULL;
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_ticketId_idx"
    ON meta_cloud_messages ("ticketId") WHERE "ticketId" IS NOT NULL;
-- for ON DELETE SET NULL when old events or media are purged
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_webhookEventId_idx"
    ON meta_cloud_messages ("webhookEventId");
CREATE INDEX IF NOT EXISTS "meta_cloud_messages_mediaId_idx"
    ON meta_cloud_messages ("mediaId") WHERE "mediaId" IS NOT NULL;


-- MetaCloudMessageStatus ---------------------------------------------------

CREATE TABLE IF NOT EXISTS meta_cloud_message_statuses (
    "id"               text PRIMARY KEY DEFAULT metacloud_new_id(),
    "messageId"        text NOT NULL REFERENCES meta_cloud_messages ("id")
                       ON DELETE CASCADE,
    "webhookEventId"   text REFERENCES meta_cloud_webhook_events ("id")
                       ON DELETE SET NULL,
    "status"           "MetaCloudMessageStatusEnum" NOT NULL,
    "timestamp"        text NOT NULL,
    "statusAt"         timestamptz(3) NOT NULL,
    "recipientId"      text,
    "errorCode"        int,
    "errorTitle"       text,
    "errorMessage"     text,
    "errorDetails"     jsonb,
    "pricingModel"     text,
    "pricingCategory"  text,
    "createdAt"        timestamptz(3) NOT NULL DEFAULT now()
);

-- Amendments: the keys of the "status" sub-object of docs/EVENTS.md.
ALTER TABLE meta_cloud_message_statuses
    ALTER COLUMN "timestamp" DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS "wamid" text,
    ADD COLUMN IF NOT EXISTS "statusRaw" text,  -- Meta's status, verbatim
    ADD COLUMN IF NOT EXISTS "recipientUserId" text,
    ADD COLUMN IF NOT EXISTS "recipientParentUserId" text,
    ADD COLUMN IF NOT EXISTS "recipientType" text,
    ADD COLUMN IF NOT EXISTS "recipientParticipantId" text,
    ADD COLUMN IF NOT EXISTS "recipientParticipantUserId" text,
    ADD COLUMN IF NOT EXISTS "errorHref" text,
    ADD COLUMN IF NOT EXISTS "pricingType" text,
    ADD COLUMN IF NOT EXISTS "billable" boolean,
    ADD COLUMN IF NOT EXISTS "conversationId" text,
    ADD COLUMN IF NOT EXISTS "conversationOriginType" text,
    ADD COLUMN IF NOT EXISTS "conversationExpiresAt" timestamptz(3),
    ADD COLUMN IF NOT EXISTS "bizOpaqueCallbackData" text,
    ADD COLUMN IF NOT EXISTS "updatedAt" timestamptz(3) NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS "meta_cloud_message_statuses_messageId_status_idx"
    ON meta_cloud_message_statuses ("messageId", "status");
-- time ranges of statuses (the PRD's statusAt index): BRIN, since statuses
-- arrive in about the order of their time; a btree entry per status cost
-- more than any such query saves (docs/SQL.md, "Indexes")
DROP INDEX IF EXISTS "meta_cloud_message_statuses_statusAt_idx";
CREATE INDEX IF NOT EXISTS "meta_cloud_message_statuses_statusAt_brin"
    ON meta_cloud_message_statuses USING brin ("statusAt");
CREATE INDEX IF NOT EXISTS "meta_cloud_message_statuses_webhookEventId_idx"
    ON meta_cloud_message_statuses ("webhookEventId");


-- Large values ---------------------------------------------------------------
-- lz4 compresses the bodies and payloads several times faster than pglz; a
-- server built without lz4 keeps the default.

DO $$
BEGIN
    ALTER TABLE meta_cloud_webhook_requests ALTER COLUMN "body" SET COMPRESSION lz4;
    ALTER TABLE meta_cloud_webhook_events ALTER COLUMN "payload" SET COMPRESSION lz4;
    ALTER TABLE meta_cloud_messages ALTER COLUMN "rawMessageData" SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 not available, keeping the default compression';
END
$$;


INSERT INTO metacloud_schema_migrations (version, name)
VALUES (2, 'metacloud_schema')
ON CONFLICT (version) DO NOTHING;
