-- Webhooks (projections/webhooks/): each tenant's subscriptions, and one delivery row per
-- subscription and event, written by the webhook recorder in the same transaction as its
-- offsets in projection_offsets, then worked through by the sender.

CREATE TABLE webhook_subscriptions (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    url text NOT NULL,
    -- The event types delivered; empty delivers every type on the events topic.
    event_types text[] NOT NULL DEFAULT '{}',
    -- Kept as given: the sender needs it to sign (HMAC-SHA256), so it cannot be a hash.
    secret text NOT NULL,
    -- DELETE /webhooks/{id} sets this false; the delivery log stays.
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant) WHERE active;

CREATE TABLE webhook_deliveries (
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id),
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    job_id uuid,
    occurred_at timestamptz NOT NULL,
    -- The request body exactly as sent and signed (the event as the SSE feed's data).
    body text NOT NULL,
    -- PENDING until DELIVERED (a 2xx), or FAILED: a refusal that is not retried, the last
    -- attempt failing, or the subscription deleted before delivery.
    status text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts integer NOT NULL DEFAULT 0,
    response_code integer,
    error text,
    -- When the sender may try next; a claim moves it past the attempt's time-out, so a sender
    -- that dies mid-attempt leaves the delivery to be tried again, never lost.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, event_id)
);
-- The sender's claim reads each subscription's first due deliveries along this index, so a
-- long backlog (a receiver down for days) costs a claim no more than a short one.
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (subscription_id, next_attempt_at, event_id) WHERE status = 'PENDING';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (subscription_id, created_at DESC);

-- Every attempt, for the delivery log's history (500, 500, 200).
CREATE TABLE webhook_attempts (
    subscription_id uuid NOT NULL,
    event_id uuid NOT NULL,
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    response_code integer,
    error text,
    PRIMARY KEY (subscription_id, event_id, attempt),
    FOREIGN KEY (subscription_id, event_id) REFERENCES webhook_deliveries
);
