-- The transparency log (docs/protocol.md, "The transparency log"): an append-only RFC 9162
-- Merkle tree over every routed envelope and every event that decides trust.
--
-- A leaf is first written to transparency_pending in the very transaction that routes its
-- envelope or makes its change, so the commit that decides the one decides the other: a server
-- killed at any moment loses no leaf and writes none twice. The sequencer (one replica at a time,
-- under an advisory lock) then moves pending leaves to their dense place in transparency_leaves
-- and stores the tree head it signed, in one transaction.
CREATE TABLE transparency_pending (
    seq bigserial PRIMARY KEY,
    -- An envelope's message id, so that the routing transaction can take its leaf back with its
    -- routing-log row when the forwarded copy's publish fails; null for events.
    message_id bytea,
    leaf bytea NOT NULL
);

CREATE TABLE transparency_leaves (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    leaf bytea NOT NULL,
    -- RFC 9162's leaf hash, SHA-256(0x00 || leaf): what inclusion proofs are asked for by.
    leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
    sequenced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transparency_leaves_hash ON transparency_leaves (leaf_hash);

-- Every signed tree head, by size: monitors may ask for the head they saw again.
CREATE TABLE transparency_heads (
    size bigint PRIMARY KEY CHECK (size >= 0),
    root bytea NOT NULL CHECK (length(root) = 32),
    timestamp_ms bigint NOT NULL,
    signature bytea NOT NULL CHECK (length(signature) = 64)
);

-- What each node's monitor of the log reported with its last heartbeat (size checked, alarms),
-- for the dashboard. The node also logs and counts its alarms itself: a server hiding them here
-- hides nothing from the organization.
ALTER TABLE nodes ADD COLUMN log_report jsonb;
