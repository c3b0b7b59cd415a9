-- Keys the server cannot swap: each published key names the key it replaced and, for a
-- rotation, carries the organization's signature of the hand-over made with that previous key.
-- Members follow a signed rotation by themselves and refuse any other change of key until a
-- person trusts the new fingerprint; the server only stores and serves these statements.
ALTER TABLE organization_keys
    ADD COLUMN previous_key_id bytea CHECK (length(previous_key_id) = 32),
    ADD COLUMN rotation_signature bytea CHECK (length(rotation_signature) = 64);
