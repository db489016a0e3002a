"""The aidnode node: a starlette app over a SQLite store, its web pages, JSON API and CLI.

`server.app.create_app(config)` builds one node; nothing runs at import.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aidnode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
