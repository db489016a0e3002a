-- Signed feeds (DESIGN §4.2–4.4): the node's own keys and append-only feed, the keys it has
-- pinned for other nodes, and the request nonces it has seen (so a replay is refused even
-- across a restart).

CREATE TABLE node_keys (
    name TEXT PRIMARY KEY,
    public TEXT NOT NULL,
    -- The first seq this key signs, and the last (the `key` entry that retired it).
    first_seq INTEGER NOT NULL,
    retired_at_seq INTEGER
) STRICT;
CREATE UNIQUE INDEX node_keys_one_current ON node_keys((retired_at_seq IS NULL))
    WHERE retired_at_seq IS NULL;

-- Entries as their canonical (RFC 8785) JSON text, exactly as signed and served.
CREATE TABLE feed (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('item', 'relay', 'key')),
    item_id TEXT,
    at TEXT NOT NULL,
    entry TEXT NOT NULL
) STRICT;
CREATE INDEX feed_by_item ON feed(item_id, seq) WHERE item_id IS NOT NULL;

CREATE TABLE peers (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    trust TEXT NOT NULL DEFAULT 'unknown' CHECK (trust IN ('blocked', 'unknown', 'trusted')),
    created TEXT NOT NULL
) STRICT;

CREATE TABLE peer_keys (
    key_id TEXT PRIMARY KEY,
    peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    public TEXT NOT NULL,
    retired_at_seq INTEGER
) STRICT;
CREATE INDEX peer_keys_by_peer ON peer_keys(peer_id);

CREATE TABLE seen_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) STRICT, WITHOUT ROWID;
CREATE INDEX seen_nonces_by_time ON seen_nonces(seen_at);
