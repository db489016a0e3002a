"""The node's outbound HTTP client, with the address guard (DESIGN §4.4, §8).

Every request this node makes to another node goes through `Outbound`. A base_url is whatever
a remote admin typed, so the client must not become a way to reach this node's own network
(server-side request forgery). The guard:

- resolves the host once per connection and refuses, before any connection is made, if ANY
  resolved address is not a public unicast address (`address_refusal`): loopback, private,
  link-local, CGNAT, multicast, reserved, unspecified, documentation, or an IPv6 form of such an
  IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4). IP-literal hosts are checked too.
  `allow_private_addresses` turns the check off, for tests and the demo;
- connects to the address it checked, never to the name, so a second DNS answer cannot swap
  in another address (DNS rebinding). TLS still verifies the certificate for the URL's host
  name, which is also the SNI;
- follows no redirects, caps the answer's size (by Content-Length and while reading) and puts
  one time limit over resolve + connect + send + read.

How the pinning works: httpcore, under httpx, lets a connection pool take a *network backend*
(`httpcore.AsyncConnectionPool(network_backend=...)`, public API). The pool asks the backend to
`connect_tcp(host, port)` with the URL's host and then starts TLS with that same host as the
server name. `AddressGuard` is such a backend: it resolves `host`, checks every address, and
hands the checked IP literal to httpcore's own `AnyIOBackend`, which therefore does no DNS
lookup of its own. Kept-alive connections are reused per origin, so a host is resolved once
per new connection, not per request. Certificates are checked against certifi's roots, or
against SSL_CERT_FILE / SSL_CERT_DIR when the environment sets them (as httpx does).

Each node gets a small pool of its own. httpcore 1.0's pool looks over all its connections,
once per connection, whenever a request starts or ends (encode/httpcore#1035): one pool kept
alive to 50 followers spent more of the node's time on that than on the pushes. A node's pool
unused for longer than the keep-alive expiry is closed, connections and all.

`Outbound` drives the pool directly (httpcore's public `Request`/`Response`) rather than through
`httpx.AsyncClient`: a client would bring a cookie jar shared across nodes, `.netrc` and proxy
settings from the environment, and redirect and decoding machinery we would only switch off.
httpx is still used to build the request, since `federation.httpsig.sign_request` signs an
`httpx.Request`, and for `Headers`. Answers are asked for as `identity` and read raw, so the
size cap counts the bytes we hold and a compressed answer cannot expand past it.

Every failure becomes a `FetchError` whose message is one line an admin can read; HTTP
statuses, 4xx and 5xx included, are not failures: the caller decides what they mean.
"""

import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import anyio
import httpcore
import httpx

from .errors import ProtocolError
from .httpsig import sign_request
from .identity import SOFTWARE_NAME
from .keys import NodeKey
from .strictjson import loads_strict
from .timefmt import system_clock

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
PER_NODE_CONNECTIONS = 8  # open at once to one node; kept alive up to as many
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept

Resolver = Callable[[str, int], Awaitable[list[str]]]
Signer = Callable[[], tuple[NodeKey, str]]


class FetchError(ProtocolError):
    """Another node could not be reached or answered unusably.

    str() is a one-line reason fit to show an admin, e.g. 'refused: 127.0.0.1 is a loopback
    address', 'timed out after 10 s', 'answer over 2097152 bytes', 'redirects are not followed
    (302)', 'connection refused'.
    """


# --- which addresses may be reached ------------------------------------------------------------

_NAMED_RANGES = [
    (ipaddress.ip_network(net), reason)
    for nets, reason in [
        (("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"), "a private address"),
        (("100.64.0.0/10",), "a shared (CGNAT) address"),
        (("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
         "a documentation address"),
        (("255.255.255.255/32",), "a broadcast address"),
    ]
    for net in nets
]  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that reach it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def address_refusal(ip: str) -> str | None:
    """None if a node may connect to `ip`, else why not ('a loopback address', ...).

    Only public unicast addresses are allowed (`is_global`, not multicast). Python's own
    tables are not relied on alone: this Python calls multicast, 6to4 and NAT64 addresses
    global, and ::ffff:8.8.8.8 reserved, so the IPv6 forms of an IPv4 address are judged by
    that IPv4 address, and the named ranges are checked explicitly.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = address_refusal(str(inner))
            return None if reason is None else f"an IPv6 form of {inner}, {reason}"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    for network, reason in _NAMED_RANGES:
        if address in network:
            return reason
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, through the event loop's
    getaddrinfo."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressGuard(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves a host once, refuses it unless every address
    passes `address_refusal`, and connects to a checked address, never to the name."""

    def __init__(self, *, allow_private_addresses: bool, resolver: Resolver | None = None) -> None:
        self.allow_private_addresses = allow_private_addresses
        self._resolve = resolver or resolve_host
        self._tcp = httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """Resolve `host` (an IP literal stands for itself) and check every address."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                addresses = await self._resolve(host, port)
            except OSError as error:  # socket.gaierror
                raise FetchError(f"could not resolve {host}: {_describe_os_error(error)}") from None
            literal = False
        else:
            addresses, literal = [host], True
        if not addresses:
            raise FetchError(f"could not resolve {host}: no addresses")
        if not self.allow_private_addresses:
            for address in addresses:
                reason = address_refusal(address)
                if reason is not None and literal:
                    raise FetchError(f"refused: {address} is {reason}")
                if reason is not None:
                    raise FetchError(f"refused: {host} resolves to {address}, {reason}")
        return addresses

    # httpcore's backend interface passes its per-phase timeouts in; they are handed on.
    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        addresses = await self.checked_addresses(host, port)
        failure: httpcore.ConnectError | None = None
        for address in addresses:  # in the resolver's order, as a browser would
            try:
                return await self._tcp.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except httpcore.ConnectError as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("unix sockets are not used for federation")

    async def sleep(self, seconds: float) -> None:
        await self._tcp.sleep(seconds)


# --- the client -------------------------------------------------------------------------------


@dataclass
class _NodePool:
    """The connections to one node, and whether they are in use."""

    pool: httpcore.AsyncConnectionPool
    in_flight: int = 0  # requests under way
    used: float = 0.0  # when the last one ended (anyio.current_time)


@dataclass(frozen=True)
class Reply:
    """Another node's answer, whatever its status."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The body as strict JSON (raises MalformedError)."""
        return loads_strict(self.body)


_TRANSPORT_ERRORS = (
    httpcore.ConnectionNotAvailable, httpcore.ProxyError, httpcore.UnsupportedProtocol,
    httpcore.ProtocolError, httpcore.NetworkError, httpcore.TimeoutException,
    httpx.HTTPError, httpx.InvalidURL, httpx.StreamError,
    anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError,
)  # fmt: skip


class Outbound:
    """The node's HTTP client to other nodes: signed requests through the address guard.

    One connection pool per node, so requests to the same node reuse a kept-alive
    connection, and many nodes can be asked at once. `signer` returns the current key and its
    key id; it is called per request, since keys rotate.
    """

    def __init__(
        self, *, allow_private_addresses: bool, signer: Signer | None = None,
        clock: Callable[[], datetime] = system_clock, timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES, resolver: Resolver | None = None,
        user_agent: str = SOFTWARE_NAME,
    ) -> None:  # fmt: skip
        self.guard = AddressGuard(allow_private_addresses=allow_private_addresses,
                                  resolver=resolver)  # fmt: skip
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._signer = signer
        self._clock = clock
        self._user_agent = user_agent
        self._ssl_context = httpx.create_ssl_context()
        self._pools: dict[tuple, _NodePool] = {}  # by (scheme, host, port)
        self._next_sweep = 0.0

    async def __aenter__(self) -> "Outbound":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for node in pools:
            await node.pool.aclose()

    def _pool_for(self, url: httpx.URL) -> "_NodePool":
        key = (url.raw_scheme, url.raw_host, url.port)
        node = self._pools.get(key)
        if node is None:
            # The keep-alive limit equals the connection limit: httpcore 1.0 closes every
            # connection that falls idle while its pool holds more connections *in all*
            # than max_keepalive_connections (encode/httpcore#1000).
            node = self._pools[key] = _NodePool(httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context, network_backend=self.guard,
                max_connections=PER_NODE_CONNECTIONS,
                max_keepalive_connections=PER_NODE_CONNECTIONS, keepalive_expiry=KEEPALIVE_EXPIRY,
            ))  # fmt: skip
        return node

    async def _sweep(self) -> None:
        """Close the pools of nodes not asked anything for longer than the keep-alive expiry
        (httpcore closes expired connections only when their pool is used)."""
        now = anyio.current_time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + KEEPALIVE_EXPIRY
        stale = [key for key, node in self._pools.items()
                 if not node.in_flight and now - node.used > KEEPALIVE_EXPIRY]  # fmt: skip
        # All taken out before any is closed, so no request starts on a pool being closed.
        closing = [self._pools.pop(key) for key in stale]
        with anyio.CancelScope(shield=True):
            for node in closing:
                await node.pool.aclose()

    async def request(
        self, method: str, url: str, *, json_body: Any = None, json_bytes: bytes | None = None,
        signed: bool = True, max_bytes: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - one limit over the whole exchange
    ) -> Reply:  # fmt: skip
        """Send one request and return the answer, or raise FetchError.

        `json_body` (if not None) is sent as compact UTF-8 JSON; `json_bytes` is JSON the
        caller has already encoded, sent as it is (say, one body for many receivers). With
        `signed`, the request carries the node's RFC 9421 signature (over content-digest too
        when there is a body).
        """
        if signed and self._signer is None:
            raise ValueError("a signed request needs a signer")
        if json_body is not None and json_bytes is not None:
            raise ValueError("give json_body or json_bytes, not both")
        request = self._build(method, url, json_body, signed, json_bytes)
        limit = self.max_bytes if max_bytes is None else max_bytes
        seconds = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(seconds):
                return await self._send(request, limit)
        except (TimeoutError, httpcore.TimeoutException):
            raise FetchError(f"timed out after {seconds:g} s") from None
        except _TRANSPORT_ERRORS as error:
            raise FetchError(_describe(error)) from error

    def _build(self, method: str, url: str, json_body: Any, signed: bool,
               json_bytes: bytes | None = None) -> httpx.Request:  # fmt: skip
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as error:
            raise FetchError(f"not a valid URL: {error}") from None
        if target.scheme not in ("http", "https"):
            what = target.scheme or "a relative URL"
            raise FetchError(f"only http and https URLs are fetched, not {what}")
        if not target.host:
            raise FetchError("the URL has no host")
        if target.userinfo:
            raise FetchError("the URL must not carry a user name or password")
        headers = {"Accept": "application/json", "Accept-Encoding": "identity",
                   "User-Agent": self._user_agent}  # fmt: skip
        content = json_bytes
        if json_body is not None:
            text = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            content = text.encode("utf-8")
        if content is not None:
            headers["Content-Type"] = "application/json"
        request = httpx.Request(method, target, headers=headers, content=content)
        if signed:
            assert self._signer is not None
            key, key_id = self._signer()
            sign_request(request, key, key_id, now=self._clock())
        return request

    async def _send(self, request: httpx.Request, limit: int) -> Reply:
        await self._sweep()
        node = self._pool_for(request.url)
        node.in_flight += 1
        try:
            return await self._exchange(node.pool, request, limit)
        finally:
            node.in_flight -= 1
            node.used = anyio.current_time()

    async def _exchange(self, pool: httpcore.AsyncConnectionPool, request: httpx.Request,
                        limit: int) -> Reply:  # fmt: skip
        url = request.url
        response = await pool.handle_async_request(httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                             target=url.raw_path),
            headers=request.headers.raw,
            content=request.content,
        ))  # fmt: skip
        try:
            headers = httpx.Headers(response.headers)
            if 300 <= response.status < 400:
                raise FetchError(f"redirects are not followed ({response.status})")
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise FetchError(f"answer is {encoding}-encoded, although identity was asked for")
            length = headers.get("content-length", "").strip()
            if length.isdigit() and int(length) > limit:
                raise FetchError(f"answer over {limit} bytes")
            body = bytearray()
            async for chunk in response.aiter_stream():
                body += chunk
                if len(body) > limit:
                    raise FetchError(f"answer over {limit} bytes")
        finally:
            # Closing hands the connection back (or drops it, if the answer was not read to
            # the end); it must finish even when the time limit has cancelled us.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return Reply(status=response.status, headers=headers, body=bytes(body))


# --- one-line reasons -------------------------------------------------------------------------


def _causes(error: BaseException):
    """The error and everything it was raised from, groups included, without repeats."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))


def _describe_os_error(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return (error.strerror or str(error)).lower()
    if error.errno:
        return _os_message(error.errno)
    return str(error) or type(error).__name__


def _os_message(number: int) -> str:
    return os.strerror(number).lower()  # 'connection refused', 'network is unreachable'


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:199] + "…"


def _describe(error: BaseException) -> str:
    """A short reason for a transport error, for an admin's eyes."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _one_line(f"TLS certificate not accepted: {cause.verify_message or cause}")
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLError):
            return _one_line(f"TLS failed: {cause.reason or cause}")
    number = next((c.errno for c in _causes(error) if isinstance(c, OSError) and c.errno), None)
    if isinstance(error, httpcore.ConnectError):
        return _os_message(number) if number else _one_line(f"could not connect: {error}")
    if isinstance(error, httpcore.ReadError | httpcore.WriteError):
        detail = _os_message(number) if number else "closed"
        return f"connection lost: {detail}"
    if isinstance(error, httpcore.RemoteProtocolError):
        return _one_line(f"bad HTTP answer: {error}")
    if number:
        return _os_message(number)
    return _one_line(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
