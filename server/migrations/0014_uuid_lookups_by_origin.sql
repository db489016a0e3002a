-- An item is found by its uuid alone (its page, /items/<uuid>) through the index of ids:
-- an id is <origin>/items/<uuid>, so `Store.item_by_uuid` probes that id for each origin
-- the node holds items of (a few dozen, walked on items_browse_origin). The index of uuids
-- went: its keys are random, so each item an ally sent dirtied a page of it of its own, and
-- on a node of 100,000 items that index cost more of ingest's writing than any other.
DROP INDEX items_by_uuid;
