-- Snapshots for new allies (issue 9, docs/protocol.md §8.1): `GET /federation/snapshot` serves
-- the latest entry of every live item in our feed, in seq order, a page at a time, without
-- reading the history around them.

-- The seq of the latest entry of our own feed that carries this item: its latest `item` entry
-- for one of our items, our latest `relay` entry of it for another node's need we passed on;
-- NULL for anything our feed never carried. Kept by the trigger below, so every append keeps
-- it (an item's row is always written before the entry that carries it, in one transaction).
ALTER TABLE items ADD COLUMN feed_seq INTEGER;

UPDATE items SET feed_seq = latest.seq
    FROM (SELECT item_id, max(seq) AS seq FROM feed WHERE item_id IS NOT NULL GROUP BY item_id)
        AS latest
    WHERE items.id = latest.item_id AND items.is_local;
UPDATE items SET feed_seq = latest.seq
    FROM (SELECT json_extract(entry, '$.body.entry.body.id') AS item_id, max(seq) AS seq
          FROM feed WHERE type = 'relay' GROUP BY 1) AS latest
    WHERE items.id = latest.item_id AND NOT items.is_local;

CREATE TRIGGER items_feed_seq AFTER INSERT ON feed WHEN new.type IN ('item', 'relay') BEGIN
    UPDATE items SET feed_seq = new.seq
        WHERE id = coalesce(new.item_id, json_extract(new.entry, '$.body.entry.body.id'));
END;

-- A snapshot page: the live items our feed carries, in the order of their latest entry. Only
-- live rows are in the index, so a page costs its own size, whatever the history.
CREATE INDEX items_in_snapshot ON items(feed_seq)
    WHERE feed_seq IS NOT NULL AND status IN ('open', 'promised');

-- Every snapshot page carries the feed's `key` entries (few), read without scanning the feed.
CREATE INDEX feed_key_entries ON feed(seq) WHERE type = 'key';
