-- Matching's bounded pool (issue 9, server/matching.py): the newest open items of a kind, and
-- the newest of a kind in one category, read as index ranges, newest first. Only open rows are
-- in them; `expires` rides along so items past their time (not yet marked by the worker) are
-- passed over without reading their rows, and `status` so SQLite sees that the index alone
-- answers the query. A pool costs its own size, whatever the node holds.
CREATE INDEX items_to_match ON items(kind, created DESC, row DESC, expires, status)
    WHERE status = 'open';
CREATE INDEX items_to_match_in_category
    ON items(kind, category, created DESC, row DESC, expires, status) WHERE status = 'open';
