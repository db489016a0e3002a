-- Only this node's own items have an owner: the index of items by owner leaves the others
-- out, so an ally's item written costs one index less (remote items are most of a busy
-- node's writes). `owner_id = ?` implies `owner_id IS NOT NULL`, so every query by owner, and
-- the foreign key's lookup when a member is deleted, still uses it.
DROP INDEX items_by_owner;
CREATE INDEX items_by_owner ON items(owner_id, created DESC) WHERE owner_id IS NOT NULL;
