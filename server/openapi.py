"""The OpenAPI 3.1 document for `/api/v1/…`, served at `/api/v1/openapi.json`.

Written out by hand from the item rules in `federation.items`, so its enums and limits are
the ones the code enforces.
"""

from federation import items as r
from federation import responses as resp

from . import __version__


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}  # fmt: skip


def _item_fields(*, for_input: bool) -> dict:
    text = {"type": "string"}
    fields = {
        "kind": {"enum": list(r.KINDS)},
        "title": {**text, "minLength": 1, "maxLength": r.TITLE_MAX},
        "body": {**text, "minLength": 1, "maxLength": r.BODY_MAX, "description": "Plain text."},
        "category": {"enum": list(r.CATEGORIES)},
        "tags": {"type": "array", "maxItems": r.TAGS_MAX,
                 "items": {**text, "minLength": 1, "maxLength": r.TAG_MAX}},
        "quantity": {**text, "maxLength": r.QUANTITY_MAX},
        "location": {"$ref": "#/components/schemas/Location"},
        "urgency": {"enum": list(r.URGENCIES), "description": "Needs only; default normal."},
        "status": {"enum": list(r.STATUSES)},
        "reach": {"enum": list(r.REACHES),
                  "description": "Only widens. Offers default to allies, needs to local."},
        "hop_limit": {"type": "integer", "minimum": r.HOP_LIMIT_MIN, "maximum": r.HOP_LIMIT_MAX,
                      "description": "Only at network reach; default 2."},
        "expires": {**text, "format": "date-time", "description": "At most 90 days after created."},
    }  # fmt: skip
    if for_input:
        fields["escalation"] = {"enum": list(r.ESCALATIONS),
                                "description": "Needs only: ask allies after the node's delay, or never."}  # fmt: skip
        fields["share_author"] = {"type": "boolean",
                                  "description": "Show the poster's name at network reach."}  # fmt: skip
    return fields


def openapi_document(node) -> dict:
    item_props = _item_fields(for_input=False)
    item_props.update({
        "id": {"type": "string", "format": "uri"},
        "created": {"type": "string", "format": "date-time"},
        "updated": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 1},
        "author": {"type": "string"},
        "origin": {"type": "string", "format": "uri"},
        "origin_name": {"type": "string"},
        "via": {"type": "array", "items": {"type": "string", "format": "uri"}},
        "escalation": {"enum": list(r.ESCALATIONS)},
        "share_author": {"type": "boolean"},
    })  # fmt: skip
    uuid_param = {"name": "uuid", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": r.UUID_RE.pattern}}  # fmt: skip
    peer_response = {"description": "The peer", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Peer"}}}}
    peers_response = {"description": "Every peer", "content": {"application/json": {"schema": {
        "type": "object", "required": ["peers"], "properties": {
            "peers": {"type": "array", "items": {"$ref": "#/components/schemas/Peer"}}}}}}}
    item_response = {"description": "The item",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}}  # fmt: skip

    def query(name: str, schema: dict, description: str) -> dict:
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}  # fmt: skip

    return {
        "openapi": "3.1.0",
        "info": {"title": f"aidnode API ({node.config.name})", "version": __version__},
        "servers": [{"url": node.config.base_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/items": {
                "get": {
                    "summary": "List live items, this node's and its allies'",
                    "parameters": [
                        query("kind", {"enum": list(r.KINDS)}, "Offers or needs."),
                        query("category", {"enum": list(r.CATEGORIES)}, "One category."),
                        query("q", {"type": "string", "maxLength": 200}, "Words to search for (each a prefix; all must occur). Matches come newest first."),
                        query("status", {"enum": ["open", "promised", "fulfilled", "withdrawn"]},
                              "Default: open and promised."),
                        query("origin", {"anyOf": [{"enum": ["local", "remote", "all"]},
                                                   {"type": "string", "format": "uri"}]},
                              "Default all; or one group's base URL (this node's or a known "
                              "peer's)."),
                        query("near", {"type": "string", "pattern": "^[0-9b-hjkmnp-z]{1,5}$"},
                              "A geohash prefix: items located within it."),
                        query("id", {"type": "string"}, "One item by its id URL."),
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Default 50."),
                        query("cursor", {"type": "string"}, "The `next` of the previous page."),
                    ],
                    "responses": {
                        "200": {"description": "A page of items", "content": {"application/json": {
                            "schema": {"type": "object", "required": ["items", "next"], "properties": {
                                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                                "next": {"type": ["string", "null"]}}}}}},
                        "400": _error("A bad query parameter"),
                        "401": _error("No valid API token"),
                    },
                },
                "post": {
                    "summary": "Post an offer or a need",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/NewItem"}}}},
                    "responses": {
                        "201": item_response,
                        "400": _error("Not JSON"),
                        "401": _error("No valid API token"),
                        "413": _error("Body too large"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("A field breaks a rule; `field` names it"),
                    },
                },
            },
            "/api/v1/items/{uuid}": {
                "parameters": [uuid_param],
                "get": {"summary": "One of this node's items",
                        "responses": {"200": item_response, "401": _error("No valid API token"),
                                      "404": _error("No such item")}},
                "patch": {
                    "summary": "Change fields, status, reach or hop_limit of a local item",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ItemChange"}}}},
                    "responses": {
                        "200": item_response,
                        "400": _error("Not JSON"),
                        "401": _error("No valid API token"),
                        "403": _error("Not the poster or a coordinator; or a remote item"),
                        "404": _error("No such item"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("A field breaks a rule; `field` names it"),
                    },
                },
            },
            "/api/v1/responses": {
                "get": {"summary": "Responses to the member's items (coordinators and admins: "
                                   "to every item), with how to reach their senders",
                        "responses": {"200": {"description": "Responses, newest first",
                                              "content": {"application/json": {"schema": {
                                                  "type": "object", "required": ["responses"],
                                                  "properties": {"responses": {"type": "array", "items": {
                                                      "$ref": "#/components/schemas/Response"}}}}}}},
                                      "401": _error("No valid API token")}},
                "post": {
                    "summary": "Respond to an item: to another node's, delivered to its origin "
                               "before the answer; to this node's own, stored here",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False,
                        "required": ["item", "message", "contact"], "properties": {
                            "item": {"type": "string", "format": "uri"},
                            "message": {"type": "string", "minLength": 1, "maxLength": resp.MESSAGE_MAX},
                            "contact": {"type": "string", "minLength": 1, "maxLength": resp.CONTACT_MAX,
                                        "description": "Sent to the item's origin only, never kept here."}}}}}},
                    "responses": {
                        "202": {"description": "Taken by the item's origin", "content": {
                            "application/json": {"schema": {"type": "object", "required": ["id"],
                                                            "properties": {"id": {"type": "string"}}}}}},
                        "400": _error("Not JSON"), "401": _error("No valid API token"),
                        "403": _error("Your own item; the origin refuses this node; or an origin "
                                      "not reached over https"),
                        "404": _error("No such item (here or at its origin)"),
                        "409": _error("The item is no longer open"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("A field breaks a rule; `field` names it"),
                        "429": _error("The origin had many responses from this node: see Retry-After"),
                        "502": _error("The item's origin could not be reached"),
                        "504": _error("The item's origin did not answer in time"),
                    },
                },
            },
            "/api/v1/responses/sent": {
                "get": {"summary": "What the member sent, and what became of it (never the contact)",
                        "responses": {"200": {"description": "Responses sent, newest first",
                                              "content": {"application/json": {"schema": {
                                                  "type": "object", "required": ["responses"],
                                                  "properties": {"responses": {"type": "array", "items": {
                                                      "$ref": "#/components/schemas/SentResponse"}}}}}}},
                                      "401": _error("No valid API token")}},
            },
            "/api/v1/responses/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": r.UUID_RE.pattern}}],
                "patch": {
                    "summary": "Accept (the item becomes promised) or decline a response; the "
                               "poster or a coordinator",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False, "required": ["state"],
                        "properties": {"state": {"enum": list(resp.DECISIONS)}}}}}},
                    "responses": {
                        "200": {"description": "The response", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Response"}}}},
                        "400": _error("Not JSON"), "401": _error("No valid API token"),
                        "404": _error("No such response to an item you may decide on"),
                        "409": _error("Decided otherwise already, or the item can no longer be promised"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("A field breaks a rule; `field` names it"),
                    },
                },
            },
            "/api/v1/peers": {
                "get": {"summary": "Other nodes this node knows (admins only)",
                        "responses": {"200": peers_response,
                                      "401": _error("No valid API token"),
                                      "403": _error("Not an admin")}},
                "post": {
                    "summary": "Trust and follow a node by its base URL: fetches its node "
                               "document and pins its key (200 if already known)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "required": ["url"],
                                   "additionalProperties": False,
                                   "properties": {"url": {"type": "string"}}}}}},
                    "responses": {
                        "200": peer_response, "201": peer_response,
                        "400": _error("Not JSON"), "401": _error("No valid API token"),
                        "403": _error("Not an admin"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("Not a valid base URL, or this node's own"),
                        "502": _error("The node could not be reached or its document is invalid"),
                    },
                },
            },
            "/api/v1/peers/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer"}}],
                "patch": {
                    "summary": "Trust, un-trust or block a node; relay its needs; follow or "
                               "unfollow it. Blocking removes its items from every view.",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "additionalProperties": False,
                                   "minProperties": 1, "properties": {
                                       "trust": {"enum": ["trusted", "unknown", "blocked"]},
                                       "relay": {"type": "boolean"},
                                       "follow": {"type": "boolean"}}}}}},
                    "responses": {
                        "200": peer_response, "400": _error("Not JSON"),
                        "401": _error("No valid API token"), "403": _error("Not an admin"),
                        "404": _error("No such peer"),
                        "415": _error("Not sent as application/json"),
                        "422": _error("A field breaks a rule; `field` names it"),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A token from `aidnode token`."}},
            "schemas": {
                "Response": {"type": "object", "properties": {
                    "id": {"type": "string"}, "item": {"type": "string", "format": "uri"},
                    "from": {"type": "object", "properties": {
                        "node": {"type": "string", "format": "uri"}, "name": {"type": "string"}}},
                    "message": {"type": "string"}, "contact": {"type": "string"},
                    "received": {"type": "string", "format": "date-time"},
                    "state": {"enum": ["pending", *resp.DECISIONS]}}},
                "SentResponse": {"type": "object", "properties": {
                    "id": {"type": "string"}, "item": {"type": "string", "format": "uri"},
                    "item_title": {"type": "string"}, "origin": {"type": "string", "format": "uri"},
                    "message": {"type": "string"},
                    "created": {"type": "string", "format": "date-time"},
                    "updated": {"type": "string", "format": "date-time"},
                    "state": {"enum": ["pending", *resp.DECISIONS]}}},
                "Peer": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "url": {"type": "string"},
                    "name": {"type": "string"}, "fingerprint": {"type": ["string", "null"]},
                    "trust": {"enum": ["trusted", "unknown", "blocked"]},
                    "relay": {"type": "boolean"},
                    "we_follow": {"enum": ["none", "pending", "accepted", "rejected"]},
                    "they_follow": {"enum": ["none", "pending", "accepted", "rejected"]},
                    "received_seq": {"type": "integer"}, "delivered_seq": {"type": "integer"},
                    "last_error": {"type": ["string", "null"]}}},
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "field": {"type": "string"}}},
                "Location": {"type": "object", "required": ["label"], "additionalProperties": False,
                             "properties": {"label": {"type": "string", "minLength": 1, "maxLength": r.LABEL_MAX},
                                            "geohash": {"type": "string", "maxLength": r.GEOHASH_MAX,
                                                        "pattern": f"^[{r.GEOHASH_ALPHABET}]+$"}}},
                "Item": {"type": "object", "properties": item_props,
                         "required": [*r.REQUIRED_STATE_FIELDS, "origin", "origin_name"]},
                "NewItem": {"type": "object", "additionalProperties": False,
                            "required": list(r.REQUIRED_ON_CREATE),
                            "properties": _item_fields(for_input=True)},
                "ItemChange": {"type": "object", "additionalProperties": False,
                               "properties": {k: v for k, v in _item_fields(for_input=True).items()
                                              if k != "kind"}},
            },
        },
    }  # fmt: skip
