"""Machine-readable documents: the node document, the health check, the OpenAPI document."""

import pytest

from federation.keys import fingerprint, load_key, parse_public_key
from server.routing import AccessRoute

pytestmark = pytest.mark.anyio


async def test_node_document_names_the_node_and_its_key(harness):
    doc = (await harness.client().get("/.well-known/aidnode")).json()
    base = harness.config.base_url
    assert doc["protocol"] == "aidnode/1" and doc["id"] == base
    assert doc["name"] == "Eastside Mutual Aid"
    assert doc["feed"] == f"{base}/federation/feed" and doc["inbox"] == f"{base}/federation/inbox"
    assert doc["subscriptions"] == f"{base}/federation/subscriptions"
    assert doc["software"]["name"] == "aidnode"
    [key] = doc["keys"]
    assert key["id"] == f"{base}#main" and key["type"] == "Ed25519"
    on_disk = load_key(harness.config.keys_dir / "main.pem", "main")
    assert fingerprint(parse_public_key(key["public"])) == fingerprint(on_disk.public)


async def test_healthz_answers_when_the_database_does(harness):
    response = await harness.client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_healthz_is_503_with_a_json_error_once_the_database_is_closed(harness):
    """With the store's connections closed, /healthz says 503 in JSON, not 200 or a 500."""
    await harness.node.store.close()
    response = await harness.client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "error": "the database does not answer"}


async def test_healthz_asks_the_database_a_real_question(harness):
    """A database that still answers `SELECT 1` but cannot read its tables is not healthy."""
    async with harness.node.store.write() as db:
        await db.execute("DROP TABLE node_meta")
    response = await harness.client().get("/healthz")
    assert response.status_code == 503 and "error" in response.json()


async def test_openapi_documents_every_api_route(harness):
    doc = (await harness.client().get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items()
                  for method in ops if method != "parameters"}  # fmt: skip
    api_routes = {(method, route.path) for route in harness.app.routes
                  if isinstance(route, AccessRoute) and route.surface == "api"
                  for method in route.methods - {"HEAD"}}  # fmt: skip
    assert api_routes == documented
    # Its enums are the ones the code enforces.
    new_item = doc["components"]["schemas"]["NewItem"]
    assert new_item["properties"]["category"]["enum"][0] == "food"
    assert new_item["required"] == ["kind", "title", "body", "category"]


async def test_unknown_paths_are_404_in_the_right_shape(harness):
    client = harness.client()
    api = await client.get("/api/v1/nothing")
    assert api.status_code == 404 and api.json() == {"error": "not found"}
    page = await client.get("/nothing")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    wrong_method = await client.delete("/healthz")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
