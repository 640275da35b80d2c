-- 001_platform_standalone.sql
--
-- The platform's own tables in a minimal standalone form, so that the module
-- runs (and is tested) without the platform.  A platform that already has
-- these tables (its Prisma schema created them) skips this file:
-- `sql/migrate --skip-platform`.
--
-- Prisma's default naming: quoted PascalCase tables, quoted camelCase
-- columns, text ids.  Nothing in later migrations depends on more than the
-- "id" columns of these tables and, in "MetaWhatsAppCredential", on
-- "organizationId", "phoneNumberId" (unique), "wabaId" and "accessToken".
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
CREATE INDEX IF NOT EXISTS "Lead_organizationId_phone_idx"
    ON "Lead" ("organizationId", "phone");

CREATE TABLE IF NOT EXISTS "Conversation" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "leadId"          text REFERENCES "Lead" ("id") ON DELETE SET NULL,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "Ticket" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "conversationId"  text REFERENCES "Conversation" ("id") ON DELETE SET NULL,
    "status"          text NOT NULL DEFAULT 'open',
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "Message" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "conversationId"  text REFERENCES "Conversation" ("id") ON DELETE SET NULL,
    "ticketId"        text REFERENCES "Ticket" ("id") ON DELETE SET NULL,
    "direction"       text,
    "body"            text,
    "status"          text,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "CampaignRecipient" (
    "id"              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    "organizationId"  text NOT NULL
                      REFERENCES "Organization" ("id") ON DELETE CASCADE,
    "wamid"           text,
    "status"          text,
    "createdAt"       timestamptz(3) NOT NULL DEFAULT now(),
    "updatedAt"       timestamptz(3) NOT NULL DEFAULT now()
);

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
