-- Allies (DESIGN §4.5–4.6): what a node keeps per peer (following, relaying, cursors, health),
-- and the remote item states it accepted in a valid chain but would not apply.

ALTER TABLE peers ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE peers ADD COLUMN relay INTEGER NOT NULL DEFAULT 0 CHECK (relay IN (0, 1));
ALTER TABLE peers ADD COLUMN we_follow TEXT NOT NULL DEFAULT 'none'
    CHECK (we_follow IN ('none', 'pending', 'accepted', 'rejected'));
ALTER TABLE peers ADD COLUMN they_follow TEXT NOT NULL DEFAULT 'none'
    CHECK (they_follow IN ('none', 'pending', 'accepted', 'rejected'));
-- What we hold of their feed: the last entry accepted, and their head when last read.
ALTER TABLE peers ADD COLUMN received_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN received_hash TEXT;
ALTER TABLE peers ADD COLUMN head_seq INTEGER NOT NULL DEFAULT 0;
-- What they acknowledged of ours.
ALTER TABLE peers ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
-- Health: a fork (last_error 'fork: …') stops ingest until an admin re-syncs.
ALTER TABLE peers ADD COLUMN last_success TEXT;
ALTER TABLE peers ADD COLUMN last_error TEXT;
ALTER TABLE peers ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN next_attempt TEXT;
-- Pushing our entries to them, when they follow us: backs off on its own.
ALTER TABLE peers ADD COLUMN push_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN push_next_attempt TEXT;
ALTER TABLE peers ADD COLUMN push_stopped INTEGER NOT NULL DEFAULT 0 CHECK (push_stopped IN (0, 1));

CREATE TABLE ingest_refusals (
    id INTEGER PRIMARY KEY,
    peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    item_id TEXT,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
) STRICT;
CREATE INDEX ingest_refusals_by_peer ON ingest_refusals(peer_id, seq);
