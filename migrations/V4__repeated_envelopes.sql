-- Envelopes that reached ingress again after they were routed (a replay, or a publisher's retry
-- after a lost confirm): dropped by the routing log's primary key, and counted here per
-- publishing organization so that operators see them.
CREATE TABLE repeated_envelopes (
    sender_org  uuid PRIMARY KEY,
    count       bigint NOT NULL DEFAULT 0,
    last_at     timestamptz NOT NULL DEFAULT now()
);
