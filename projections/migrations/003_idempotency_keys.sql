-- Idempotency keys reserved by the API before it queues a job: the first request with a key
-- wins atomically, retries get the same job, and a different body under the same key is a
-- conflict. (The jobs projection cannot answer this: it lags the request by a hop or two.)
CREATE TABLE idempotency_keys (
    tenant text NOT NULL,
    idempotency_key text NOT NULL,
    job_id uuid NOT NULL,
    request_sha256 text NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);
