"""`aidnode serve` with several worker processes (the `workers` setting).

Each worker process has a listening socket of its own, all bound to the same address with
SO_REUSEPORT, so the kernel spreads new connections across them. One socket shared by all, as
`uvicorn --workers` does it, leaves the spreading to whichever process wakes first: a burst
of connections (a proxy opening its pool, twenty members at once) mostly goes to one process,
and kept-alive connections stay there, so one core does the work while the other idles.

The parent binds the sockets (a port in use fails before any worker starts), starts one
process per socket, starts another on a socket whose process dies, and on SIGTERM or SIGINT
passes the signal on and waits for the workers to stop gracefully. A worker that exits with an
error within `STARTUP_GRACE` seconds of starting is taken to be broken (its app, database or
config), not unlucky: the parent then stops them all and exits, rather than restarting it for
ever. One killed by a signal is restarted whenever it dies.

Each worker builds the app with `server.app.app_from_environment` (the data directory is in
the environment), and only one of them runs the background workers (server/workers.py).
"""

import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

log = logging.getLogger("aidnode")

STARTUP_GRACE = 10.0  # seconds: a worker that dies sooner is broken, not unlucky
STOP_GRACE = 30.0  # seconds the workers have to stop before they are killed
BACKLOG = 2048


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on one address, each for one worker process.

    SO_REUSEPORT lets any process of the same user bind the port again, another `aidnode
    serve` included, which would then take a share of this node's connections. So the address
    is first bound without it, which fails if anything listens there already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _serve_one(sock: socket.socket, options: dict) -> None:
    """A worker process: one uvicorn server on its own socket (graceful on SIGTERM)."""
    config = uvicorn.Config("server.app:app_from_environment", factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(data_dir: Path, count: int, host: str, port: int, options: dict) -> int:
    """Run `count` worker processes until SIGTERM or SIGINT; the exit status."""
    from .app import DATA_DIR_VARIABLE

    sockets = listening_sockets(host, port, count)
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    # Counters for /metrics go to files every worker adds up (server/metrics.py).
    with tempfile.TemporaryDirectory(prefix="aidnode-metrics-") as shared:
        os.environ[DATA_DIR_VARIABLE] = str(data_dir.resolve())
        os.environ["AIDNODE_WORKERS"] = str(count)  # for their shares of the rate limits
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared

        def start(number: int) -> tuple[multiprocessing.Process, float]:
            process = spawn.Process(target=_serve_one, args=(sockets[number], options),
                                    name=f"aidnode worker {number + 1}")  # fmt: skip
            process.start()
            log.info("started worker process %d (%d of %d)", process.pid, number + 1, count)
            return process, time.monotonic()

        workers = [start(number) for number in range(count)]
        status = 0
        while not stopping.wait(0.5):
            for number, (process, started) in enumerate(workers):
                if process.is_alive():
                    continue
                if process.exitcode > 0 and time.monotonic() - started < STARTUP_GRACE:
                    log.error("worker process %d exited with status %s %.0f s after it started: "
                              "stopping (see the log above)", process.pid, process.exitcode,
                              time.monotonic() - started)  # fmt: skip
                    stopping.set()
                    status = 1
                    break
                log.warning("worker process %d exited with status %s; starting another",
                            process.pid, process.exitcode)  # fmt: skip
                workers[number] = start(number)
        for process, _ in workers:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process, _ in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker process %d did not stop in %.0f s: killing it", process.pid,
                            STOP_GRACE)  # fmt: skip
                process.kill()
                process.join()
    for sock in sockets:
        sock.close()
    log.info("all worker processes stopped")
    return status
