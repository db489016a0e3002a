"""The aidnode/1 protocol as a library: no web framework, no database.

Everything here takes bytes, dicts and small dataclasses in and gives the same out, so the
server, the tests and a second implementation can all lean on it. `federation` never imports
`server`.

- `items`: the item model (offers and needs), its validation and its JSON (DESIGN §3).
- `identity`: base URLs and the node document (§4.1).
- `keys`: Ed25519 key pairs, their files and fingerprints.
- `encoding`: strict unpadded base64url.
- `timefmt`: the protocol's time format and an injectable clock.
- `errors`: the exception tree.
- `outbound`: the HTTP client to other nodes, with the address guard (§8).
"""
