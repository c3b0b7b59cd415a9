-- A revocation is the organization's signed statement (docs/protocol.md, "Revocation"): the
-- signature over "fedq key revocation v1\0" || organization || key, and the fingerprint of the
-- key that made it (the revoked key itself, or another key of the organization). Members honour
-- a revocation only when it verifies; revocations recorded before this column have none.
ALTER TABLE organization_keys ADD COLUMN revocation_signature bytea, ADD COLUMN revoked_by bytea;
