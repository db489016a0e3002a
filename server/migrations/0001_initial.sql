-- The node's first schema: members, sessions, tokens, invites, items and their search index,
-- and the audit log.

CREATE TABLE node_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('member', 'coordinator', 'admin')),
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created TEXT NOT NULL
) STRICT;

-- Sessions live server-side so they can be revoked; only the sha256 of the cookie is kept.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    last_used TEXT,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX api_tokens_by_user ON api_tokens(user_id);

CREATE TABLE invites (
    id INTEGER PRIMARY KEY,
    code_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('member', 'coordinator', 'admin')),
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    used_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    used_at TEXT,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;

-- Items, local and (later) remote. `state` is the full protocol state as JSON; the columns
-- beside it are copies for filtering and sorting. `owner_id`, `escalation` and
-- `share_author` are the node's own notes about its local items and never leave it.
CREATE TABLE items (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    uuid TEXT NOT NULL,
    origin TEXT NOT NULL,
    is_local INTEGER NOT NULL CHECK (is_local IN (0, 1)),
    kind TEXT NOT NULL,
    category TEXT NOT NULL,
    status TEXT NOT NULL,
    reach TEXT NOT NULL,
    urgency TEXT,
    geohash TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    expires TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    escalation TEXT CHECK (escalation IN ('after_delay', 'never')),
    share_author INTEGER NOT NULL DEFAULT 0 CHECK (share_author IN (0, 1))
) STRICT;
CREATE INDEX items_by_uuid ON items(uuid);
CREATE INDEX items_browse ON items(status, created DESC, row DESC);
CREATE INDEX items_by_owner ON items(owner_id, created DESC);
CREATE INDEX items_by_expiry ON items(expires) WHERE status IN ('open', 'promised');

CREATE VIRTUAL TABLE items_fts USING fts5(
    title, body, tags,
    content = 'items', content_rowid = 'row',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts(rowid, title, body, tags) VALUES (new.row, new.title, new.body, new.tags);
END;
CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts(items_fts, rowid, title, body, tags)
        VALUES ('delete', old.row, old.title, old.body, old.tags);
END;
CREATE TRIGGER items_fts_update AFTER UPDATE OF title, body, tags ON items BEGIN
    INSERT INTO items_fts(items_fts, rowid, title, body, tags)
        VALUES ('delete', old.row, old.title, old.body, old.tags);
    INSERT INTO items_fts(rowid, title, body, tags) VALUES (new.row, new.title, new.body, new.tags);
END;

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_log_by_time ON audit_log(at DESC);
