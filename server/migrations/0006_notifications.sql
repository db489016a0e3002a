-- Notifications (issue 7): what a member is told about responses (to their items, and what
-- became of theirs), the optional email address they are told at, and the emails owed.

-- A member's own address for notification emails: optional, shown to no one else, never in
-- an item, a feed or a message to another node.
ALTER TABLE users ADD COLUMN email TEXT;

-- One per event and member: `response` (someone responded to one of their items), `accepted`
-- or `declined` (what became of a response they made). The item's title and the names are
-- kept as they were, so the list still reads well once the item has left this node. Never a
-- contact: that is shown only on the item's page, to its poster and coordinators.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('response', 'accepted', 'declined')),
    item_id TEXT NOT NULL,
    item_title TEXT NOT NULL,
    response_id TEXT NOT NULL,
    actor_name TEXT NOT NULL DEFAULT '',   -- the responder's display name (kind `response`)
    group_name TEXT NOT NULL DEFAULT '',   -- the responder's group, or the item's group
    created TEXT NOT NULL,
    read TEXT,                             -- when the member saw it; NULL: unread
    UNIQUE (user_id, response_id, kind)
) STRICT;
CREATE INDEX notifications_by_user ON notifications(user_id, id DESC);
CREATE INDEX notifications_unread ON notifications(user_id) WHERE read IS NULL;

-- Emails owed for notifications, sent by a worker with retries. The address is read from
-- `users` when sending (a member who removed theirs gets nothing). `next_attempt` NULL:
-- given up after the last attempt, or refused for good by the mail server.
CREATE TABLE email_outbox (
    notification_id INTEGER PRIMARY KEY REFERENCES notifications(id) ON DELETE CASCADE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT,
    last_error TEXT
) STRICT;
CREATE INDEX email_outbox_due ON email_outbox(next_attempt) WHERE next_attempt IS NOT NULL;
