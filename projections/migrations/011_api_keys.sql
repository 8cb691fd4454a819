-- API keys (README "Tenants and API keys"). The API owns this table; `stagecast keys` writes it.
--
-- A key is `sck_<key_id>_<secret>`: `key_id` is its public name (shown by `keys list`, safe in
-- logs), the secret 32 random bytes. Only the SHA-256 digest of the whole key is stored. A
-- slow password hash (bcrypt, argon2) exists to make guessing a low-entropy password costly;
-- a 256-bit random secret cannot be guessed at any speed, so a fast digest, compared in
-- constant time, is as safe here and costs every request almost nothing.
CREATE TABLE api_keys (
    key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    key_sha256 bytea NOT NULL CHECK (octet_length(key_sha256) = 32),
    tenant text NOT NULL CHECK (length(tenant) BETWEEN 1 AND 100),
    scopes text[] NOT NULL CHECK (
        cardinality(scopes) > 0 AND scopes <@ ARRAY['submit', 'read', 'admin']::text[]
    ),
    -- Requests a minute, with a burst of as many (a token bucket per API process).
    rate_per_minute integer NOT NULL CHECK (rate_per_minute > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
