-- Browsing by origin (our group, allied groups, one group) newest first, from an index
-- rather than by walking every live item: at 100,000 items, "allied groups" took 40 ms.
CREATE INDEX items_browse_local ON items(status, created DESC, row DESC) WHERE is_local;
CREATE INDEX items_browse_remote ON items(status, created DESC, row DESC) WHERE NOT is_local;
CREATE INDEX items_browse_origin ON items(origin, status, created DESC, row DESC);
