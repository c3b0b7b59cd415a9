-- The fedq server's schema. The server stores metadata and ciphertext only: no column holds a
-- plaintext input, result, message or algorithm log.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Every public key an organization has published; the newest one not retired is current.
CREATE TABLE organization_keys (
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key_id       bytea NOT NULL CHECK (length(key_id) = 32),
    public_key   text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz,
    PRIMARY KEY (org_id, key_id)
);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- NULL only for root administrators, who belong to no organization.
    org_id        uuid REFERENCES organizations (id) ON DELETE CASCADE,
    username      text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 100),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('root', 'org_admin', 'researcher', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'root') = (org_id IS NULL))
);

-- Login sessions. Only a hash of the token is stored, so a database dump does not log anyone in.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE collaborations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE collaboration_members (
    collaboration_id uuid NOT NULL REFERENCES collaborations (id) ON DELETE CASCADE,
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    joined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collaboration_id, org_id)
);
CREATE INDEX collaboration_members_org ON collaboration_members (org_id);

CREATE TABLE nodes (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- SHA-256 of the API key; the key itself is shown once, at registration.
    api_key_hash bytea NOT NULL UNIQUE,
    broker_user  text NOT NULL UNIQUE,
    version      text,
    last_seen_at timestamptz,
    online       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    UNIQUE (org_id, name)
);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    collaboration_id uuid NOT NULL REFERENCES collaborations (id),
    run_id           uuid NOT NULL,
    parent_task_id   uuid REFERENCES tasks (id),
    image            text NOT NULL,
    name             text NOT NULL DEFAULT '',
    creator_org_id   uuid NOT NULL REFERENCES organizations (id),
    creator_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    creator_node_id  uuid REFERENCES nodes (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_collaboration_created ON tasks (collaboration_id, created_at DESC);
CREATE INDEX tasks_created ON tasks (created_at DESC);
CREATE INDEX tasks_run ON tasks (run_id);
CREATE INDEX tasks_parent ON tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    task_id           uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    org_id            uuid NOT NULL REFERENCES organizations (id),
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'delivered', 'running', 'completed', 'failed', 'crashed', 'killed', 'refused')),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, org_id)
);
CREATE INDEX jobs_org_status ON jobs (org_id, status);
CREATE INDEX jobs_status ON jobs (status);

-- Results sealed for a researcher's organization, kept until fetched through the API.
CREATE TABLE results (
    job_id      uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    message_id  bytea NOT NULL UNIQUE,
    envelope    bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Every envelope routed, by message id: metadata only. The primary key is what makes routing
-- idempotent across redeliveries and server replicas.
CREATE TABLE routing_log (
    message_id       bytea PRIMARY KEY CHECK (length(message_id) = 16),
    kind             text NOT NULL,
    sender_org       uuid NOT NULL,
    recipient_org    uuid NOT NULL,
    collaboration_id uuid NOT NULL,
    task_id          uuid NOT NULL,
    run_id           uuid NOT NULL,
    status           text,
    size             integer NOT NULL,
    -- forwarded: published to the recipient's queue; stored: kept in results for the API.
    outcome          text NOT NULL CHECK (outcome IN ('forwarded', 'stored')),
    via              text NOT NULL CHECK (via IN ('broker', 'api')),
    publisher        text NOT NULL,
    routed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_log_routed ON routing_log (routed_at DESC);
CREATE INDEX routing_log_task ON routing_log (task_id);

-- Envelopes the router refused: what could be read of the header, and why. Never a payload.
CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    message_id    bytea,
    reason_code   text NOT NULL,
    reason        text NOT NULL,
    kind          text,
    sender_org    uuid,
    recipient_org uuid,
    task_id       uuid,
    publisher     text,
    size          integer NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason ON dead_letters (reason_code);
