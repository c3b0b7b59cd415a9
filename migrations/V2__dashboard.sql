-- The admin dashboard: what nodes say they run, and indexes for its per-organization views of
-- the routing log and dead letters.

-- The policy summary a node reports with its heartbeat (images, requesters, limits): shown to
-- administrators, never used to decide anything.
ALTER TABLE nodes ADD COLUMN policy jsonb;

CREATE INDEX routing_log_sender ON routing_log (sender_org, routed_at DESC);
CREATE INDEX routing_log_recipient ON routing_log (recipient_org, routed_at DESC);
CREATE INDEX routing_log_kind ON routing_log (kind, routed_at DESC);
CREATE INDEX dead_letters_sender ON dead_letters (sender_org, received_at DESC);
CREATE INDEX dead_letters_recipient ON dead_letters (recipient_org, received_at DESC);
CREATE INDEX jobs_task ON jobs (task_id, status);
