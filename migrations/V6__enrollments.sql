-- One-time tokens with which a node enrolls itself: an organization's administrator creates one
-- for a node name; `fedq node enroll` on the node's machine trades it, once and before it
-- expires, for the node's registration (API key, broker credentials). Only the token's SHA-256
-- is kept.
CREATE TABLE enrollment_tokens (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    node_name   text NOT NULL CHECK (length(node_name) BETWEEN 1 AND 100),
    token_hash  bytea NOT NULL UNIQUE,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    node_id     uuid REFERENCES nodes (id) ON DELETE SET NULL
);
CREATE INDEX enrollment_tokens_org ON enrollment_tokens (org_id, created_at DESC);
