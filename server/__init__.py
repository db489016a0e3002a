"""The aidnode node: a starlette app over a SQLite store, its web pages, JSON API and CLI.

`server.app.create_app(config)` builds one node; nothing runs at import.
"""

import functools


def __getattr__(name: str) -> str:
    # `__version__` is looked up when first asked for: importlib.metadata costs a signature
    # checker process (`server.checker`, which imports this package) a third of its memory.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aidnode")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
