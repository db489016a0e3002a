"""Log lines for `aidnode serve`: plain text, or one JSON object a line (`log_format = json`).

One handler on the root logger carries every line, the node's own loggers and uvicorn's
alike (`serve` runs uvicorn with `log_config=None`, so its loggers propagate here). The node
writes its own access log (`log_access` via `ObserveRequests`, logger `aidnode.access`) in place of uvicorn's, which
cannot say how long a request took: a JSON access line carries `method`, `path`, `status`,
`duration` (seconds) and `client` as fields of its own.

Invite codes are secrets a path can hold (`/join/<code>`): they are redacted from the access
log and from the arguments of any other line (`RedactSecrets`). What `serve` says to the
person starting it (`tell_operator`) is printed as it is with text logs, and is one JSON line
with json logs, so that a JSON log holds nothing else.
"""

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields a record may carry beside its message (`extra=`), copied into its JSON line.
FIELDS = ("method", "path", "status", "duration", "client", "link")
_JOIN = re.compile(r"(/|%2[Ff])join(/|%2[Ff])[^/?&#\s\"%]+")

access_log = logging.getLogger("aidnode.access")


def redact(text: str) -> str:
    """`text` with any invite code in a /join/<code> path (plain or percent-encoded) hidden."""
    return _JOIN.sub(r"\1join\2[redacted]", text)


class RedactSecrets(logging.Filter):
    """Keep invite codes out of the log: a path holds one in /join/<code>."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(getattr(record, "path", None), str):
            record.path = redact(record.path)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the record's
    own FIELDS (an access line's method, path, status, duration…), then any exception."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry = {"time": at.replace("+00:00", "Z"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}  # fmt: skip
        for field in FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing lines in `log_format` (text or json) to `stream` (stderr), redacted."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(log_format: str) -> None:
    """Send every log line, at INFO and above, to stderr in `log_format` (text or json)."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(log_format)]
    root.setLevel(logging.INFO)


def tell_operator(log_format: str, message: str, *, link: str | None = None) -> None:
    """Say something to the person running `serve`: printed (the link on a line of its own)
    with text logs; a log line of logger `aidnode.serve` with json logs, the link a field of
    its own (never redacted: it is meant for the operator)."""
    if log_format == "json":
        logging.getLogger("aidnode.serve").info(message, extra={"link": link} if link else None)
        return
    print(message + (f"\n  {link}" if link else ""), flush=True)


Observer = Callable[[Scope, int, float], None]


class ObserveRequests:
    """Time each HTTP request and note its status, then tell each observer (scope, status,
    seconds) once it is answered in full: the access log and the request metrics."""

    def __init__(self, app: ASGIApp, observers: list[Observer]) -> None:
        self.app = app
        self.observers = observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception ServerErrorMiddleware answers

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            duration = time.perf_counter() - started
            for observe in self.observers:
                observe(scope, status, duration)


def log_access(scope: Scope, status: int, duration: float) -> None:
    """One access-log line: client, method, path (invite codes redacted), status, time."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    path = scope.get("raw_path") or scope["path"].encode()
    path = path.decode("latin-1")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    path = redact(path)
    peer = scope.get("client")
    client = f"{peer[0]}:{peer[1]}" if peer else "-"
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %.1fms', client, scope["method"], path,
        scope.get("http_version", "1.1"), status, duration * 1000,
        extra={"method": scope["method"], "path": path, "status": status,
               "duration": round(duration, 6), "client": client},
    )  # fmt: skip
