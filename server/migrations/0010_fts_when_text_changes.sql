-- The search index is rewritten only when an item's words change. Every new version of an
-- item (most are a status or a quantity) rewrote its index entry, since the upsert always sets
-- title, body and tags; the index is the costliest part of storing an item.
DROP TRIGGER items_fts_update;
CREATE TRIGGER items_fts_update AFTER UPDATE OF title, body, tags ON items
WHEN old.title IS NOT new.title OR old.body IS NOT new.body OR old.tags IS NOT new.tags BEGIN
    INSERT INTO items_fts(items_fts, rowid, title, body, tags)
        VALUES ('delete', old.row, old.title, old.body, old.tags);
    INSERT INTO items_fts(rowid, title, body, tags) VALUES (new.row, new.title, new.body, new.tags);
END;
