-- Responses (DESIGN §7): what the origin of an item receives, what a responder's node keeps of
-- what its members sent, and the decisions waiting to be sent back.

-- Responses to this node's own items, as their origin holds them: the one place a responder's
-- contact is kept. `id` is the uuid4 the responder's node chose; it is unique here, and a
-- repeat from the same node is answered as the first was. `responder_id` is set when a member
-- of this node responded to one of its items (nothing left the node).
CREATE TABLE responses (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    from_node TEXT NOT NULL,
    from_name TEXT NOT NULL,
    item_id TEXT NOT NULL,
    message TEXT NOT NULL,
    contact TEXT NOT NULL,
    created TEXT NOT NULL,
    received TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'accepted', 'declined')),
    decided TEXT,
    decided_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    responder_id INTEGER REFERENCES users(id) ON DELETE SET NULL
) STRICT;
CREATE INDEX responses_by_item ON responses(item_id, received);
CREATE INDEX responses_by_responder ON responses(responder_id) WHERE responder_id IS NOT NULL;

-- Responses this node's members sent to other nodes' items: what they wrote and what became
-- of it, never how to reach them (that went to the item's origin only). The item's title is
-- kept so the record still reads well once the item has left this node.
CREATE TABLE sent_responses (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    item_kind TEXT NOT NULL,
    item_title TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'accepted', 'declined')),
    updated TEXT NOT NULL
) STRICT;
CREATE INDEX sent_responses_by_user ON sent_responses(user_id, created DESC);

-- `response-status` messages owed to responders' nodes, sent by a worker with retries: one per
-- response (a later decision replaces one not yet sent). `next_attempt` NULL: given up.
CREATE TABLE response_status_outbox (
    response_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('accepted', 'declined')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT,
    last_error TEXT
) STRICT;
CREATE INDEX response_status_due ON response_status_outbox(next_attempt)
    WHERE next_attempt IS NOT NULL;
