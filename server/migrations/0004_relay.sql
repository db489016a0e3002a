-- Escalation and relay (DESIGN §6).

-- Remote items: the relaying nodes a relayed copy came through (a JSON list of base URLs,
-- the origin's direct ally first; NULL for a copy read from the origin's own feed), and the
-- peer whose feed it was read from (so blocking a relayer removes what came only through it).
ALTER TABLE items ADD COLUMN via TEXT;
ALTER TABLE items ADD COLUMN source_peer INTEGER REFERENCES peers(id) ON DELETE SET NULL;
CREATE INDEX items_by_source ON items(source_peer) WHERE source_peer IS NOT NULL;

-- Needs this node has relayed (or will relay, when its per-origin quota frees up, or, for an
-- edit, when the edit interval has passed): once an item is relayed, every later version is
-- relayed too, with the same path, so the need closes everywhere it went.
CREATE TABLE relays (
    item_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    path TEXT NOT NULL,          -- JSON list: the path of our relay entries, ourselves last
    version INTEGER NOT NULL,    -- the newest version relayed, or waiting to be
    state TEXT NOT NULL CHECK (state IN ('relayed', 'waiting')),
    entry TEXT,                  -- while waiting: the origin's entry to relay (canonical text)
    first_relayed TEXT,          -- when the first version went out (the quota counts these)
    status TEXT,                 -- the status of the version last relayed
    relayed_at TEXT,             -- when a version last went out (edits are coalesced)
    updated TEXT NOT NULL
) STRICT;
CREATE INDEX relays_by_origin ON relays(origin, first_relayed);
CREATE INDEX relays_waiting ON relays(updated) WHERE state = 'waiting';

-- Where our own needs went: relay entries seen in allies' feeds that carry them (the relay
-- itself is ignored, since we are the origin; the sighting is shown to coordinators).
CREATE TABLE relay_sightings (
    item_id TEXT NOT NULL,
    relayer TEXT NOT NULL,
    seen TEXT NOT NULL,
    PRIMARY KEY (item_id, relayer)
) STRICT;
