-- Each published key keeps the transparency-log leaf that logged it (KeyPublished, or KeyRotated
-- with the key as the new one), so that a client deciding to trust a key on first use or by a
-- rotation can ask for that leaf's inclusion proof (docs/protocol.md, "Keys outside the log").
ALTER TABLE organization_keys ADD COLUMN log_leaf bytea;

-- Keys published before this column: their leaf, found by its fixed layout (crates/transparency/
-- src/leaf.rs): version 1, kind 2 (event), event tag 1 (KeyPublished, key at bytes 28..59) or 2
-- (KeyRotated, new key at bytes 60..91), organization at bytes 4..19 (SQL counts from 1).
UPDATE organization_keys k SET log_leaf = l.leaf
FROM (SELECT leaf FROM transparency_leaves UNION ALL SELECT leaf FROM transparency_pending) l
WHERE get_byte(l.leaf, 0) = 1 AND get_byte(l.leaf, 1) = 2
  AND substring(l.leaf FROM 4 FOR 16) = uuid_send(k.org_id)
  AND ((get_byte(l.leaf, 2) = 1 AND length(l.leaf) = 59 AND substring(l.leaf FROM 28 FOR 32) = k.key_id)
    OR (get_byte(l.leaf, 2) = 2 AND length(l.leaf) = 91 AND substring(l.leaf FROM 60 FOR 32) = k.key_id));
