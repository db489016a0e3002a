"""Log lines (server/logs.py): the JSON formatter on records, invite codes redacted, the node's
own access log, and a real `aidnode serve` with AIDNODE_LOG_FORMAT=json writing JSON only."""

import io
import json
import logging
import re
from datetime import UTC, datetime

import httpx
import pytest

from server.logs import JsonFormatter, RedactSecrets, log_handler, tell_operator
from tests.live import LiveNode

AT = datetime(2026, 11, 24, 18, 0, 0, 123000, tzinfo=UTC)


def record(name="aidnode.allies", level=logging.INFO, msg="hello %s", args=("world",),
           exc_info=None, **extra) -> logging.LogRecord:  # fmt: skip
    made = logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, exc_info,
                                              extra=extra or None)  # fmt: skip
    made.created = AT.timestamp()
    return made


def test_a_json_line_holds_utc_time_level_logger_and_message():
    """Time in UTC ISO 8601 (with Z), level, logger and the formatted message, nothing else."""
    line = JsonFormatter().format(record(level=logging.WARNING))
    assert json.loads(line) == {"time": "2026-11-24T18:00:00.123Z", "level": "WARNING",
                                "logger": "aidnode.allies", "message": "hello world"}  # fmt: skip
    assert datetime.fromisoformat(json.loads(line)["time"]) == AT


def test_access_fields_and_a_traceback_stay_on_one_line():
    """An access line's fields are its own keys; a traceback is escaped into the one line."""
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        import sys

        exc_info = sys.exc_info()
    line = JsonFormatter().format(record(
        "aidnode.access", msg="%s", args=("GET /items",), exc_info=exc_info, method="GET",
        path="/items", status=500, duration=0.0123, client="127.0.0.1:5000",
    ))  # fmt: skip
    assert "\n" not in line
    entry = json.loads(line)
    assert {k: entry[k] for k in ("method", "path", "status", "duration", "client")} == {
        "method": "GET", "path": "/items", "status": 500, "duration": 0.0123,
        "client": "127.0.0.1:5000"}  # fmt: skip
    assert "ZeroDivisionError" in entry["exception"]


@pytest.mark.parametrize("path, shown", [
    ("/join/abcdefgh", "/join/[redacted]"),
    ("/join/abcdefgh?x=1", "/join/[redacted]?x=1"),
    ("/login?next=%2Fjoin%2Fabcdefgh", "/login?next=%2Fjoin%2F[redacted]"),
    ("/items/abcdefgh", "/items/abcdefgh"),
])  # fmt: skip
def test_invite_codes_are_redacted_from_arguments_and_paths(path, shown):
    """A /join/<code> secret never reaches a line, as an argument or as an access path."""
    uvicorn_style = record("uvicorn.access", msg='%s - "%s %s HTTP/%s" %d',
                           args=("127.0.0.1:5000", "GET", path, "1.1", 200))  # fmt: skip
    ours = record("aidnode.access", msg="%s", args=(path,), path=path)
    for rec in (uvicorn_style, ours):
        assert RedactSecrets().filter(rec) is True
    assert uvicorn_style.getMessage() == f'127.0.0.1:5000 - "GET {shown} HTTP/1.1" 200'
    assert ours.path == shown and ours.getMessage() == shown


def test_the_handler_writes_redacted_json_lines():
    """The handler `serve` installs redacts first, then writes one JSON object a line."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    handler.handle(record("uvicorn.error", msg="Started server process [%d]", args=(42,)))
    handler.handle(record("aidnode.access", msg="%s", args=("/join/secretcode",),
                          path="/join/secretcode"))  # fmt: skip
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["logger"] for entry in lines] == ["uvicorn.error", "aidnode.access"]
    assert lines[0]["message"] == "Started server process [42]"
    assert "secretcode" not in stream.getvalue() and lines[1]["path"] == "/join/[redacted]"


def test_what_serve_tells_its_operator_is_printed_or_one_json_line(capsys, caplog):
    """Text logs print the message and link; json logs make one line with the link unredacted."""
    tell_operator("text", "Open this link:", link="http://127.0.0.1:8000/join/code")
    assert capsys.readouterr().out == "Open this link:\n  http://127.0.0.1:8000/join/code\n"
    caplog.set_level(logging.INFO, logger="aidnode.serve")
    tell_operator("json", "Open this link:", link="http://127.0.0.1:8000/join/code")
    assert capsys.readouterr().out == ""
    [said] = [r for r in caplog.records if r.name == "aidnode.serve"]
    handler = log_handler("json", io.StringIO())
    handler.handle(said)
    entry = json.loads(handler.stream.getvalue())
    assert entry["message"] == "Open this link:"
    assert entry["link"] == "http://127.0.0.1:8000/join/code"


@pytest.mark.anyio
async def test_the_access_log_has_one_line_a_request_with_its_fields(harness, caplog):
    """Each request is logged once answered: method, redacted path, status and duration."""
    caplog.set_level(logging.INFO, logger="aidnode.access")
    code = await harness.node.new_invite("member", None)
    client = harness.client()
    assert (await client.get(f"/join/{code}")).status_code == 200
    assert (await client.get("/no/such/page?q=1")).status_code == 404
    lines = [r for r in caplog.records if r.name == "aidnode.access"]
    assert [(r.method, r.path, r.status) for r in lines] == [
        ("GET", "/join/[redacted]", 200), ("GET", "/no/such/page?q=1", 404)]  # fmt: skip
    assert all(isinstance(r.duration, float) and r.duration >= 0 for r in lines)
    assert code not in caplog.text
    assert re.search(r'"GET /join/\[redacted\] HTTP/1.1" 200 \d+\.\dms', lines[0].getMessage())


@pytest.mark.live
def test_serve_with_json_logs_writes_only_json_lines(tmp_path):
    """`aidnode serve` with AIDNODE_LOG_FORMAT=json: every line it writes, uvicorn's and the
    access log included, is one JSON object; the invite code shows only in its announcement."""
    node = LiveNode(tmp_path, "Json Logs", env={"AIDNODE_LOG_FORMAT": "json"}).init()
    try:
        node.start()
        # The first-admin link is announced as a JSON line; opening it leaves an access line.
        lines = [json.loads(line) for line in node.log().splitlines() if line.strip()]
        link = next(entry["link"] for entry in lines if "link" in entry)
        code = link.rsplit("/", 1)[1]
        assert httpx.get(link).status_code == 200
        assert httpx.get(f"{node.url}/metrics").status_code == 200
    finally:
        node.stop()
    text = node.log()
    entries = []
    for line in text.splitlines():
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line: {line!r}\n{text}")
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries), text
    assert all(e["time"].endswith("Z") for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.error", "aidnode.access", "aidnode.serve"} <= loggers, loggers
    access = [e for e in entries if e["logger"] == "aidnode.access"]
    assert all({"method", "path", "status", "duration"} <= set(e) for e in access)
    assert ("GET", "/join/[redacted]", 200) in {(e["method"], e["path"], e["status"]) for e in access}
    assert ("GET", "/metrics", 200) in {(e["method"], e["path"], e["status"]) for e in access}
    # The code is in the announcement for the operator, and nowhere else.
    assert [e for e in entries if code in json.dumps(e)] == [e for e in entries if "link" in e]
