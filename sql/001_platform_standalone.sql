-- 001_platform_standalone.sql
--
-- The platform's own tables in a minimal standalone form, so that the module
-- runs (and is tested) without the platform.  A platform that already has
-- these tables (its Prisma schema created them) skips this file:
-- `sql/migrate --skip-platform`.
--
-- Prisma's default naming: quoted PascalCase tables, quoted camelCase
-- columns, text ids.  The module's tables depend only on the "id" columns
-- of these tables and, in "MetaWhatsAppCredential", on "organizationId",
-- "phoneNumberId" (unique), "wabaId" and "accessToken".  The default bridge
-- (004) reads and writes the columns docs/SQL.md lists ("Bridge"); the
-- ALTER TABLE ... ADD COLUMN IF NOT EXISTS below bring them to tables made
-- by an earlier version of this file.
--
-- Idempotent: every statement may be re-run.

-- Every migration file creates the bookkeeping table itself, because this
-- file, the first, may be skipped.
CREATE TABLE IF NOT EXISTS metacloud_schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "Organization" (
    "id"         text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "name"       text NOT NULL DEFAULT '',
    "createdAt"  timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"  timestamptz(3) NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "Lead" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "name"            text,
    "phone"           text,
    "userId"          text,      -- business-scoped user id (BSUID)
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
ALTER TABLE "Lead"
    ADD COLUMN IF NOT EXISTS "username" text,
    -- the business removed the contact from its app (smb_app_state_sync)
    ADD COLUMN IF NOT EXISTS "whatsappRemovedAt" timestamptz(3);
CREATE INDEX IF NOT EXISTS "Lead_organizationId_phone_idx"
    ON "Lead" ("organizationId", "phone");
-- a lead is found by phone or by business-scoped user id
CREATE INDEX IF NOT EXISTS "Lead_organizationId_userId_idx"
    ON "Lead" ("organizationId", "userId");

CREATE TABLE IF NOT EXISTS "Conversation" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "leadId"          text REFERENCES "Lead" ("id") ON DELETE SET NULL,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
ALTER TABLE "Conversation"
    ADD COLUMN IF NOT EXISTS "phoneNumberId" text,   -- the business number
    ADD COLUMN IF NOT EXISTS "lastMessageAt" timestamptz(3),
    -- the customer-service window opens from the last inbound message
    ADD COLUMN IF NOT EXISTS "lastInboundAt" timestamptz(3);
-- one conversation per (organisation, business number, lead)
CREATE INDEX IF NOT EXISTS "Conversation_organizationId_phoneNumberId_leadId_idx"
    ON "Conversation" ("organizationId", "phoneNumberId", "leadId");

CREATE TABLE IF NOT EXISTS "Ticket" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "conversationId"  text REFERENCES "Conversation" ("id") ON DELETE SET NULL,
    "status"          text NOT NULL DEFAULT 'open',   -- open | closed
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "Ticket_conversationId_status_idx"
    ON "Ticket" ("conversationId", "status");

CREATE TABLE IF NOT EXISTS "Message" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "conversationId"  text REFERENCES "Conversation" ("id") ON DELETE SET NULL,
    "ticketId"        text REFERENCES "Ticket" ("id") ON DELETE SET NULL,
    "direction"       text,      -- INBOUND | OUTBOUND
    "body"            text,
    "status"          text,      -- a "MetaCloudMessageStatusEnum" name
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
ALTER TABLE "Message"
    ADD COLUMN IF NOT EXISTS "leadId" text
        REFERENCES "Lead" ("id") ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS "type" text,        -- Meta's type string
    ADD COLUMN IF NOT EXISTS "sentAt" timestamptz(3),
    ADD COLUMN IF NOT EXISTS "reaction" text,    -- the current emoji
    ADD COLUMN IF NOT EXISTS "editedAt" timestamptz(3),
    ADD COLUMN IF NOT EXISTS "revokedAt" timestamptz(3);

CREATE TABLE IF NOT EXISTS "CampaignRecipient" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "wamid"           text,
    "status"          text,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
-- statuses find their campaign recipient by wamid
CREATE INDEX IF NOT EXISTS "CampaignRecipient_wamid_idx"
    ON "CampaignRecipient" ("wamid");

-- The only platform table the module reads: which organisation owns a
-- phone number (and its WABA), and the token the media jobs use.
CREATE TABLE IF NOT EXISTS "MetaWhatsAppCredential" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "phoneNumberId"   text NOT NULL,
    "wabaId"          text,
    "accessToken"     text,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS "MetaWhatsAppCredential_phoneNumberId_key"
    ON "MetaWhatsAppCredential" ("phoneNumberId");
CREATE INDEX IF NOT EXISTS "MetaWhatsAppCredential_wabaId_idx"
    ON "MetaWhatsAppCredential" ("wabaId");

INSERT INTO metacloud_schema_migrations (version, name)
VALUES (1, 'platform_standalone')
ON CONFLICT (version) DO NOTHING;
