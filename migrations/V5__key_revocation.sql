-- A key revoked after a compromise: unlike a retired key, it signs nothing any more, whatever
-- creation time an envelope claims (the signer chooses that time). Revoked keys are listed to
-- the collaboration's members so that their nodes and clients stop trusting them too.
ALTER TABLE organization_keys ADD COLUMN revoked_at timestamptz;
