"""The outbound client and its address guard (DESIGN §4.4, §8), against a real local server.

A small HTTP/1.1 server (asyncio streams + h11) listens on a free 127.0.0.1 port, counts the
connections it accepts and records every request, so a test can show that a refused request
never connected, that a kept-alive connection is reused, and that signatures verify at the
receiver. Nothing but 127.0.0.1 is ever contacted: other names come from injected resolvers,
and public addresses appear only in requests the guard refuses before connecting.
"""

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import h11
import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation import outbound as outbound_module
from federation.errors import MalformedError
from federation.httpsig import MemoryNonces, SignatureError, verify_request
from federation.keys import NodeKey
from federation.outbound import FetchError, Outbound, Reply, address_refusal
from federation.timefmt import FixedClock

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 24, 18, 0, 0, tzinfo=UTC)
WEST = "https://west.test"
# Fixed test key pairs: West's current key and the one it rotates to.
WEST_KEY = NodeKey("main", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
NEXT_KEY = NodeKey("next", Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
PINNED = {WEST_KEY.key_id(WEST): WEST_KEY.public, NEXT_KEY.key_id(WEST): NEXT_KEY.public}
CAP = 2 * 1024 * 1024  # the default answer cap


@dataclass
class Seen:
    """A request as the local server received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


class LocalServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 playing another node (and misbehaving on cue)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.connections = 0
        self.requests: list[Seen] = []
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.nonces = MemoryNonces()

    async def close(self) -> None:
        self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def paths(self) -> list[str]:
        return [seen.target for seen in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._handlers.add(task)
        connection = h11.Connection(h11.SERVER)
        try:
            while (seen := await self._receive(connection, reader)) is not None:
                self.requests.append(seen)
                if not await self._answer(connection, writer, seen):
                    return  # hung up on purpose
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass  # the client hung up mid-answer: what the size caps do
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _receive(self, connection: h11.Connection, reader) -> Seen | None:
        request, body = None, bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
                return Seen(request.method.decode(), request.target.decode(), headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, connection: h11.Connection, writer, seen: Seen) -> bool:
        url = urlsplit(seen.target)
        size = int(parse_qs(url.query).get("n", ["0"])[0])

        async def send(status: int, body: bytes | list[bytes], headers=(), length: bool = True):
            chunks = body if isinstance(body, list) else [body]
            if length:
                headers = [*headers, ("Content-Length", str(sum(map(len, chunks))))]
            writer.write(connection.send(h11.Response(status_code=status, headers=headers)))
            for chunk in chunks:
                writer.write(connection.send(h11.Data(data=chunk)))
                await writer.drain()
            writer.write(connection.send(h11.EndOfMessage()))
            await writer.drain()

        def as_json(value) -> bytes:
            return json.dumps(value).encode()

        json_type = [("Content-Type", "application/json")]
        match url.path:
            case "/json":
                await send(200, as_json({"ok": True, "name": "Eastside"}), json_type)
            case "/redirect":
                await send(302, b"", [("Location", "/json")])
            case "/missing":
                await send(404, as_json({"error": "not found"}), json_type)
            case "/bytes":  # `n` bytes with a Content-Length
                await send(200, [b"x" * 65536] * (size // 65536) + [b"x" * (size % 65536)])
            case "/stream":  # `n` bytes, chunked, no Content-Length
                await send(200, [b"x" * 65536] * (size // 65536) + [b"x" * (size % 65536)],
                           length=False)  # fmt: skip
            case "/promise":  # promises `n` bytes, sends a few, then stalls
                headers = [("Content-Length", str(size))]
                writer.write(connection.send(h11.Response(status_code=200, headers=headers)))
                writer.write(connection.send(h11.Data(data=b"x" * 10)))
                await writer.drain()
                await asyncio.sleep(5)
            case "/slow":
                await asyncio.sleep(5)
                await send(200, as_json({"ok": True}), json_type)
            case "/gzip":
                await send(200, gzip.compress(b'{"ok":true}'), [("Content-Encoding", "gzip")])
            case "/duplicate-keys":
                await send(200, b'{"a":1,"a":2}', json_type)
            case "/hang-up":
                return False
            case "/verify":  # the receiver's side of DESIGN §4.4, with its own base_url
                try:
                    verified = verify_request(
                        method=seen.method, target_uri=self.base_url + seen.target,
                        headers=seen.headers, body=seen.body, lookup=PINNED.get, now=NOW,
                        nonces=self.nonces,
                    )  # fmt: skip
                except SignatureError as error:
                    await send(401, as_json({"error": str(error)}), json_type)
                else:
                    await send(200, as_json({"key_id": verified.key_id}), json_type)
            case _:
                await send(404, b"")
        return True


@pytest.fixture
async def server():
    local = LocalServer()
    await local.start()
    yield local
    await local.close()


class FakeDNS:
    """An injected resolver with fixed answers that records every lookup."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


def outbound(*, allow_private_addresses: bool = True, **options) -> Outbound:
    """West's client: signs with West's key at NOW."""
    options.setdefault("signer", lambda: (WEST_KEY, WEST_KEY.key_id(WEST)))
    return Outbound(allow_private_addresses=allow_private_addresses, clock=FixedClock(NOW),
                    **options)  # fmt: skip


async def fetch_error(client: Outbound, url: str, **kwargs) -> str:
    with pytest.raises(FetchError) as caught:
        await client.request("GET", url, signed=False, **kwargs)
    return str(caught.value)


# --- which addresses may be reached ------------------------------------------------------------

REFUSED = [
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("127.0.0.1", "a loopback address"),
    ("169.254.1.1", "a link-local address"),
    ("100.64.0.1", "a shared (CGNAT) address"),
    ("0.0.0.0", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a broadcast address"),
    ("192.0.2.1", "a documentation address"),
    ("198.18.0.1", "not a public address"),
    ("::1", "a loopback address"),
    ("::", "an unspecified address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"),
    ("fc00::1", "a private address"),
    ("ff02::1", "a multicast address"),
    ("ff0e::1", "a multicast address"),
    ("2001:db8::1", "a documentation address"),
    ("fec0::1", "a site-local address"),
    ("::10.0.0.1", "a reserved address"),
    ("::ffff:10.0.0.1", "an IPv6 form of 10.0.0.1, a private address"),
    ("::ffff:127.0.0.1", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("64:ff9b::10.0.0.1", "an IPv6 form of 10.0.0.1, a private address"),
    ("2002:a00:1::1", "an IPv6 form of 10.0.0.1, a private address"),
    ("not-an-address", "not an IP address"),
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"]


@pytest.mark.parametrize(("ip", "reason"), REFUSED)
def test_address_refusal_names_why(ip, reason):
    """Every address that is not public unicast is refused, with a reason an admin can read."""
    assert address_refusal(ip) == reason


@pytest.mark.parametrize("ip", ALLOWED)
def test_address_refusal_allows_public_addresses(ip):
    """Public unicast addresses, and IPv6 forms of public IPv4 ones, are allowed."""
    assert address_refusal(ip) is None


# --- the guard --------------------------------------------------------------------------------


async def test_loopback_literal_is_refused_before_connecting(server):
    """Without allow_private_addresses, http://127.0.0.1:port is refused and never connected."""
    async with outbound(allow_private_addresses=False) as client:
        reason = await fetch_error(client, f"{server.base_url}/json")
    assert reason == "refused: 127.0.0.1 is a loopback address"
    assert server.connections == 0


async def test_localhost_is_refused_by_what_it_resolves_to(server):
    """localhost is resolved for real and refused for its loopback address, never connected."""
    async with outbound(allow_private_addresses=False) as client:
        reason = await fetch_error(client, f"http://localhost:{server.port}/json")
    assert reason.startswith("refused: localhost resolves to ")
    assert reason.endswith("a loopback address")
    assert server.connections == 0


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "127.1", "2130706433"])
async def test_other_spellings_of_this_machine_are_refused(server, host):
    """IPv6 and IPv4-mapped literals, and numeric names libc reads as 127.0.0.1, are refused."""
    async with outbound(allow_private_addresses=False) as client:
        reason = await fetch_error(client, f"http://{host}:{server.port}/json")
    assert reason.startswith("refused: ")
    assert server.connections == 0


async def test_allow_private_addresses_reaches_loopback(server):
    """With allow_private_addresses (tests, the demo), 127.0.0.1 and localhost are reached."""
    async with outbound() as client:
        by_address = await client.request("GET", f"{server.base_url}/json", signed=False)
        by_name = await client.request("GET", f"http://localhost:{server.port}/json", signed=False)
    assert by_address.status == by_name.status == 200
    assert by_name.json() == {"ok": True, "name": "Eastside"}


@pytest.fixture
def connects(monkeypatch) -> list[str]:
    """Record every TCP connection the client attempts, and make none: so a test can use
    public addresses and still never touch the network, even if the guard were broken."""
    attempts: list[str] = []

    async def connect_tcp(self, host, port, **kwargs):
        attempts.append(host)
        raise httpcore.ConnectError("no network in this test")

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return attempts


@pytest.mark.parametrize("answers", [["8.8.8.8", "10.0.0.1"], ["10.0.0.1", "8.8.8.8"]])
async def test_a_name_is_refused_if_any_address_is_private(answers, connects):
    """A name resolving to a public and a private address is refused, whatever the order."""
    dns = FakeDNS({"mixed.test": answers})
    async with outbound(allow_private_addresses=False, resolver=dns) as client:
        reason = await fetch_error(client, "https://mixed.test/.well-known/aidnode")
    assert reason == "refused: mixed.test resolves to 10.0.0.1, a private address"
    assert dns.lookups == [("mixed.test", 443)]
    assert connects == []


async def test_a_name_with_public_addresses_is_connected_by_address(connects):
    """A public name passes the guard and is connected by its checked addresses, in order."""
    dns = FakeDNS({"east.test": ["2606:4700:4700::1111", "1.1.1.1"]})
    async with outbound(allow_private_addresses=False, resolver=dns) as client:
        reason = await fetch_error(client, "https://east.test/.well-known/aidnode")
    assert reason == "could not connect: no network in this test"
    assert connects == ["2606:4700:4700::1111", "1.1.1.1"]


async def test_the_connection_goes_to_the_checked_address(server, monkeypatch):
    """No DNS rebinding: the client connects to the address the guard resolved and checked.

    rebind.test is under .test, which never resolves (RFC 6761); only the injected resolver
    knows it. Every real getaddrinfo call is recorded too: none is for rebind.test, so nothing
    looked the name up a second time. Two requests share one kept-alive connection, and the
    name was resolved once for it.
    """
    dns = FakeDNS({"rebind.test": ["127.0.0.1"]})
    real_lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        real_lookups.append(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    url = f"http://rebind.test:{server.port}/json"
    async with outbound(resolver=dns) as client:
        # West asks twice
        first = await client.request("GET", url, signed=False)
        second = await client.request("GET", url, signed=False)
    assert first.status == second.status == 200
    assert dns.lookups == [("rebind.test", server.port)]
    assert "rebind.test" not in real_lookups
    assert set(real_lookups) <= {"127.0.0.1"}
    # the server saw the name in Host, over a single connection
    assert [seen.header("host") for seen in server.requests] == [f"rebind.test:{server.port}"] * 2
    assert server.connections == 1


async def test_connections_are_kept_alive_to_many_nodes_asked_at_once():
    """A node pushing to 50 followers at once keeps one connection to each across rounds
    (httpcore closes idle connections once the pool holds more than its keep-alive limit)."""
    servers = [LocalServer() for _ in range(50)]
    for local in servers:
        await local.start()
    try:
        async with outbound() as client:
            for _ in range(3):  # three rounds, every node at once
                replies = await asyncio.gather(*(
                    client.request("GET", f"{local.base_url}/json", signed=False)
                    for local in servers))  # fmt: skip
                assert {reply.status for reply in replies} == {200}
    finally:
        for local in servers:
            await local.close()
    assert [local.connections for local in servers] == [1] * 50
    assert {len(local.requests) for local in servers} == {3}


async def test_connections_to_a_node_not_asked_for_a_while_are_closed(monkeypatch):
    """Kept-alive connections do not pile up: once a node has not been asked anything for
    longer than the keep-alive expiry, the next request to any node closes its connection."""
    monkeypatch.setattr(outbound_module, "KEEPALIVE_EXPIRY", 0.2)
    first, second = LocalServer(), LocalServer()
    await first.start()
    await second.start()
    try:
        async with outbound() as client:
            await client.request("GET", f"{first.base_url}/json", signed=False)
            assert len(first._handlers) == 1  # kept alive
            await asyncio.sleep(0.3)
            await client.request("GET", f"{second.base_url}/json", signed=False)
            for _ in range(200):  # bounded: 2 s for the server to see the connection close
                if not first._handlers:
                    break
                await asyncio.sleep(0.01)
            assert not first._handlers
            # the first node is reached again, on a new connection
            assert (await client.request("GET", f"{first.base_url}/json", signed=False)).status == 200
    finally:
        await first.close()
        await second.close()
    assert (first.connections, second.connections) == (2, 1)


async def test_a_name_resolving_to_loopback_is_refused(server):
    """The same name is refused when private addresses are not allowed."""
    dns = FakeDNS({"rebind.test": ["127.0.0.1"]})
    async with outbound(allow_private_addresses=False, resolver=dns) as client:
        reason = await fetch_error(client, f"http://rebind.test:{server.port}/json")
    assert reason == "refused: rebind.test resolves to 127.0.0.1, a loopback address"
    assert server.connections == 0


async def test_an_unknown_name_is_a_fetch_error():
    """A name that does not resolve is a FetchError saying so."""
    async with outbound(resolver=FakeDNS({})) as client:
        reason = await fetch_error(client, "https://nowhere.test/")
    assert reason == "could not resolve nowhere.test: name or service not known"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "gopher://west.test/",
                                 "/federation/feed", "http://", "http://u:p@west.test/"])  # fmt: skip
async def test_only_plain_http_and_https_urls_are_fetched(server, url):
    """Other schemes, relative URLs, URLs without a host or with credentials are refused."""
    dns = FakeDNS({"west.test": ["127.0.0.1"]})
    async with outbound(resolver=dns) as client:
        await fetch_error(client, url)
    assert dns.lookups == []
    assert server.connections == 0


# --- answers ----------------------------------------------------------------------------------


async def test_redirects_are_not_followed(server):
    """A 3xx is a FetchError naming the status, and its Location is not fetched."""
    async with outbound() as client:
        reason = await fetch_error(client, f"{server.base_url}/redirect")
    assert reason == "redirects are not followed (302)"
    assert server.paths == ["/redirect"]


async def test_other_statuses_are_replies(server):
    """A 404 is not an error: the caller gets the Reply and decides."""
    async with outbound() as client:
        reply = await client.request("GET", f"{server.base_url}/missing", signed=False)
    assert isinstance(reply, Reply)
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "not found"}


async def test_reply_json_is_strict(server):
    """Reply.json() reads the protocol's strict JSON: duplicate keys are malformed."""
    async with outbound() as client:
        reply = await client.request("GET", f"{server.base_url}/duplicate-keys", signed=False)
    with pytest.raises(MalformedError):
        reply.json()


async def test_answers_over_the_cap_by_content_length_are_refused(server):
    """A Content-Length over the cap is refused before the body is read; the cap itself is fine."""
    async with outbound(timeout=2) as client:
        exact = await client.request("GET", f"{server.base_url}/bytes?n=1000", signed=False,
                                     max_bytes=1000)  # fmt: skip
        over = await fetch_error(client, f"{server.base_url}/bytes?n=1001", max_bytes=1000)
        # a body that would never arrive: refused on its header alone, not timed out
        promised = await fetch_error(client, f"{server.base_url}/promise?n={CAP + 1}")
    assert exact.body == b"x" * 1000
    assert over == "answer over 1000 bytes"
    assert promised == f"answer over {CAP} bytes"


async def test_streamed_answers_over_the_cap_are_refused(server):
    """Without a Content-Length, reading stops as soon as the body passes the cap."""
    async with outbound() as client:
        exact = await client.request("GET", f"{server.base_url}/stream?n=70000", signed=False,
                                     max_bytes=70000)  # fmt: skip
        over = await fetch_error(client, f"{server.base_url}/stream?n=70001", max_bytes=70000)
        default = await fetch_error(client, f"{server.base_url}/stream?n={CAP + 65536}")
    assert "content-length" not in exact.headers
    assert exact.headers["transfer-encoding"] == "chunked"
    assert len(exact.body) == 70000
    assert over == "answer over 70000 bytes"
    assert default == f"answer over {CAP} bytes"


async def test_compressed_answers_are_refused(server):
    """Answers are asked for uncompressed (so the cap counts real bytes); gzip is refused."""
    async with outbound() as client:
        reason = await fetch_error(client, f"{server.base_url}/gzip")
    assert server.requests[0].header("accept-encoding") == "identity"
    assert reason == "answer is gzip-encoded, although identity was asked for"


async def test_one_time_limit_covers_the_whole_request(server):
    """A node slower than the limit is a FetchError after the limit, not after its answer."""
    async with outbound(timeout=0.2) as client:
        started = time.monotonic()
        reason = await fetch_error(client, f"{server.base_url}/slow")
        per_request = await fetch_error(client, f"{server.base_url}/slow", timeout=0.1)
    assert reason == "timed out after 0.2 s"
    assert per_request == "timed out after 0.1 s"
    assert time.monotonic() - started < 2


async def test_a_closed_port_is_connection_refused():
    """Nothing listening: FetchError('connection refused')."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with outbound() as client:
        reason = await fetch_error(client, f"http://127.0.0.1:{port}/")
    assert reason == "connection refused"


async def test_a_node_hanging_up_is_a_fetch_error(server):
    """A connection closed without an answer is a FetchError, not an httpcore exception."""
    async with outbound() as client:
        reason = await fetch_error(client, f"{server.base_url}/hang-up")
    assert reason.startswith("bad HTTP answer: ")


# --- signatures -------------------------------------------------------------------------------


async def test_a_signed_get_verifies_at_the_receiver(server):
    """A signed GET carries a signature the receiver verifies (no body, so no digest)."""
    async with outbound() as client:
        reply = await client.request("GET", f"{server.base_url}/verify?after=0&limit=10")
    assert reply.status == 200, reply.body
    assert reply.json() == {"key_id": "https://west.test#main"}
    [seen] = server.requests
    assert seen.header("content-digest") is None
    assert '"content-digest"' not in seen.header("signature-input")


async def test_a_signed_post_verifies_and_its_digest_covers_the_body(server):
    """A signed POST sends compact UTF-8 JSON, verifies, and a swapped body fails the digest."""
    message = {"type": "response", "message": "Ich kann helfen — café at 6?"}
    async with outbound() as client:
        reply = await client.request("POST", f"{server.base_url}/verify", json_body=message)
    assert reply.status == 200, reply.body
    [seen] = server.requests
    # the body is compact JSON, UTF-8, and says it is JSON
    assert seen.body == json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    assert seen.header("content-type") == "application/json"
    assert '"content-digest"' in seen.header("signature-input")
    # the same signature over another body is refused by the receiver
    swapped = seen.body.replace("café".encode(), b"bar!!")
    with pytest.raises(SignatureError, match="(?i)digest"):
        verify_request(method="POST", target_uri=f"{server.base_url}/verify",
                       headers=seen.headers, body=swapped, lookup=PINNED.get, now=NOW,
                       nonces=None)  # fmt: skip


async def test_pre_encoded_json_is_sent_as_it_is_and_signed(server):
    """json_bytes (one body built once for many receivers) goes out byte for byte, signed."""
    body = b'{"type":"entries","entries":[{"b":1, "a":2}]}'
    async with outbound() as client:
        reply = await client.request("POST", f"{server.base_url}/verify", json_bytes=body)
        with pytest.raises(ValueError, match="not both"):
            await client.request("POST", f"{server.base_url}/verify", json_body={}, json_bytes=b"{}")
    assert reply.status == 200, reply.body
    [seen] = server.requests
    assert seen.body == body and seen.header("content-type") == "application/json"
    assert '"content-digest"' in seen.header("signature-input")


async def test_unsigned_requests_carry_no_signature(server):
    """signed=False sends no signature (the receiver answers 401); signed needs a signer."""
    async with outbound() as client:
        reply = await client.request("GET", f"{server.base_url}/verify", signed=False)
    assert reply.status == 401
    assert server.requests[0].header("signature") is None
    async with Outbound(allow_private_addresses=True) as unsigned:
        with pytest.raises(ValueError, match="signer"):
            await unsigned.request("GET", f"{server.base_url}/verify")
    assert len(server.requests) == 1


async def test_the_signer_is_asked_for_each_request(server):
    """Keys rotate: each request is signed with the key the signer gives at that moment."""
    keys = iter([WEST_KEY, NEXT_KEY])

    def signer():
        key = next(keys)
        return key, key.key_id(WEST)

    async with outbound(signer=signer) as client:
        first = await client.request("GET", f"{server.base_url}/verify")
        second = await client.request("GET", f"{server.base_url}/verify")
    assert first.json() == {"key_id": "https://west.test#main"}
    assert second.json() == {"key_id": "https://west.test#next"}


# --- TLS through a pinned address ---------------------------------------------------------------


def certificate(name: str, key, issuer_name: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
    )  # fmt: skip
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
async def tls_server(tmp_path):
    """A local server with a certificate for east.test from a test CA; records the SNI it gets.

    `ca_file` is the CA's PEM, for SSL_CERT_FILE (which the client honours, as httpx does)."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("aidnode test CA", ca_key, "aidnode test CA", ca_key, ca=True)
    leaf = certificate("east.test", leaf_key, "aidnode test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "east.pem").write_bytes(leaf.public_bytes(pem) + leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "east.pem")
    server_names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: server_names.append(name)
    local = LocalServer(tls=context)
    await local.start()
    local.ca_file = str(tmp_path / "ca.pem")
    local.server_names = server_names
    yield local
    await local.close()


async def test_tls_is_verified_for_the_url_host_not_the_address(tls_server, monkeypatch):
    """Connecting by the checked address keeps TLS honest: SNI and the certificate check use
    the URL's host name, so east.test's certificate is accepted for east.test only."""
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.ca_file)
    dns = FakeDNS({"east.test": ["127.0.0.1"], "west.test": ["127.0.0.1"]})
    async with outbound(resolver=dns) as client:
        # East's certificate for east.test, reached at 127.0.0.1
        reply = await client.request("GET", f"https://east.test:{tls_server.port}/json")
        # the same address under another name is refused by the certificate check
        mismatch = await fetch_error(client, f"https://west.test:{tls_server.port}/json")
    assert reply.json() == {"ok": True, "name": "Eastside"}
    assert tls_server.server_names == ["east.test", "west.test"]
    assert mismatch.startswith("TLS certificate not accepted: ")
    assert "west.test" in mismatch
    assert tls_server.paths == ["/json"]


async def test_tls_certificates_from_unknown_authorities_are_refused(tls_server, monkeypatch):
    """Without the test CA among the trusted ones, the certificate is refused."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with outbound(resolver=FakeDNS({"east.test": ["127.0.0.1"]})) as client:
        reason = await fetch_error(client, f"https://east.test:{tls_server.port}/json")
    assert reason.startswith("TLS certificate not accepted: ")
    assert tls_server.paths == []
