"""The `aidnode` command (DESIGN §8). Every command takes `--data DIR` (default ./aidnode-data).

Errors are one line on stderr and a non-zero exit, never a traceback: the CLI is how a group's
volunteer admin meets the node first.
"""

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from federation.errors import ProtocolError
from federation.keys import fingerprint, parse_public_key

from . import __version__
from .backup import BackupError, make_backup, restore_backup
from .config import DEFAULT_DATA_DIR, ConfigError, load_config
from .errors import ClientError
from .feed import ChainProblem
from .logs import configure_logging, tell_operator
from .node import ROLES, Node, NodeExists, init_node
from .store import StoreError

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A problem to report on one line and exit with."""


def _with_node(config, work: Callable[[Node], Awaitable[object]]) -> object:
    async def run() -> object:
        node = Node(config)
        await node.start()
        try:
            return await work(node)
        finally:
            await node.close()

    return asyncio.run(run())


def cmd_init(args: argparse.Namespace) -> None:
    config = init_node(Path(args.data), name=args.name, base_url=args.url, host=args.host,
                       port=args.port)  # fmt: skip
    try:
        _with_node(config, lambda node: asyncio.sleep(0))  # creates and migrates the database
    except BaseException:
        for path in config.data_dir.glob("aidnode.db*"):
            path.unlink()
        raise
    print(f"created node {config.name!r} at {config.base_url} in {config.data_dir}")
    print(f"next: aidnode serve --data {args.data}")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .app import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("workers", args.workers)) if v is not None}  # fmt: skip
    config = load_config(Path(args.data), **overrides)
    configure_logging(config.log_format)

    async def announce(node: Node) -> None:
        code = await node.first_admin_invite()
        if code:
            tell_operator(config.log_format, "This node has no admin yet. Open this one-time "
                          "link to become its admin:", link=node.invite_url(code))  # fmt: skip

    _with_node(config, announce)
    tell_operator(config.log_format, f"serving {config.name!r} at {config.base_url} "
                  f"(listening on {config.host}:{config.port})")  # fmt: skip
    # The node writes its own access log (server/logs.py: it says how long each request took).
    options = dict(log_config=None, access_log=False, proxy_headers=False, server_header=False,
                   timeout_graceful_shutdown=20)  # fmt: skip
    if config.workers == 1:
        uvicorn.run(create_app(config), host=config.host, port=config.port, **options)
        return
    from .serving import serve_workers

    try:
        status = serve_workers(Path(args.data), config.workers, config.host, config.port, options)
    except OSError as error:
        raise CliError(f"cannot listen on {config.host}:{config.port}: {error.strerror}") from None
    if status:
        raise CliError("a worker process failed to start")


def cmd_create_admin(args: argparse.Namespace) -> None:
    if not args.password_stdin:
        raise CliError("give the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    config = load_config(Path(args.data))

    async def create(node: Node) -> None:
        await node.create_user(username=args.username, display_name=args.display_name or args.username,
                               password=password, role="admin")  # fmt: skip

    _with_node(config, create)
    print(f"created admin {args.username.strip().lower()!r}")


def cmd_token(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))

    async def make(node: Node) -> str:
        user = await node.store.user_by_username(args.username.strip().lower())
        if user is None or user.disabled:
            raise CliError(f"no active member named {args.username!r}")
        return await node.new_api_token(user, args.label or "cli")

    token = _with_node(config, make)
    print(f"API token for {args.username} (shown once; send it as 'Authorization: Bearer <token>'):",
          file=sys.stderr)  # fmt: skip
    print(token)


def cmd_invite(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))

    async def make(node: Node) -> str:
        return node.invite_url(await node.new_invite(args.role, None))

    link = _with_node(config, make)
    print(f"one-time invite for a {args.role} (valid 7 days):", file=sys.stderr)
    print(link)


def cmd_key_rotate(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))
    entry = _with_node(config, lambda node: node.rotate_key())
    new_key = entry["body"]["key"]
    print(f"rotated: entry {entry['seq']} hands the feed from {entry['key']} to {new_key['id']}")
    print("new key fingerprint (tell your allies, to compare out of band):", file=sys.stderr)
    print(fingerprint(parse_public_key(new_key["public"])))


def _describe(peer, prints: dict[int, str]) -> str:
    health = f"error: {peer.last_error}" if peer.last_error else (
        f"read {peer.received_seq} of {max(peer.head_seq, peer.received_seq)}")
    return (f"{peer.url}  {peer.name!r}  {peer.trust}, following: {peer.we_follow}, "
            f"{health}\n    key {prints.get(peer.id, '(none pinned)')}")


def cmd_peer_add(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))

    async def add(node: Node) -> str:
        peer, created = await node.allies.add_peer(args.url, None)
        accepted = await node.allies.pull(peer)
        peer = await node.store.peer(peer.id)
        prints = await node.allies.fingerprints()
        said = "added" if created else "already known; now trusted and followed"
        line = f"{said}: {_describe(peer, prints)}"
        if not peer.last_error:
            line += f"\n    read {accepted} new entries of its feed"
        return line + "\ncompare the key's fingerprint with the group through a channel you trust"

    print(_with_node(config, add))


def cmd_peer_list(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))

    async def listing(node: Node) -> list[str]:
        prints = await node.allies.fingerprints()
        return [_describe(peer, prints) for peer in await node.store.peers()]

    lines = _with_node(config, listing)
    print("\n".join(lines) if lines else "no peers yet: add one with `aidnode peer add URL`")


def _cmd_peer_trust(trust: str):
    def run(args: argparse.Namespace) -> None:
        config = load_config(Path(args.data))

        async def change(node: Node) -> str:
            peer = await node.store.peer_by_url(node.allies.parse_url(args.url))
            if peer is None:
                raise CliError(f"{args.url} is not a known peer: add it with `aidnode peer add`")
            peer = await node.allies.set_peer(peer.id, None, trust=trust)
            return f"{peer.url} is now {peer.trust}"

        print(_with_node(config, change))

    return run


def cmd_check(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))
    try:
        counts = _with_node(config, lambda node: node.check())
    except ChainProblem as problem:
        raise CliError(f"problem: {problem}") from None
    print(f"ok: {counts['entries']} entries verify as one chain under {counts['keys']} key(s); "
          f"{counts['federated_items']} federated items match their latest entries")  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DemoError, run

    if not 1024 <= args.base_port <= 65533:
        raise CliError("--base-port must be from 1024 to 65533 (the demo uses it and the next two)")
    try:
        run(Path(args.data), args.base_port)
    except DemoError as error:
        raise CliError(str(error)) from None


def cmd_backup(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))
    about = make_backup(config.data_dir, Path(args.output), base_url=config.base_url)
    print(f"backed up {config.name!r} (feed entry {about['feed_head_seq']}, "
          f"{about['local_items']} items of its own) to {args.output}")  # fmt: skip
    print("the backup holds the node's signing key: keep it as safe as the key itself",
          file=sys.stderr)  # fmt: skip


def cmd_restore(args: argparse.Namespace) -> None:
    about = restore_backup(Path(args.backup), Path(args.data))
    config = load_config(Path(args.data))
    _with_node(config, lambda node: asyncio.sleep(0))  # migrations, if the backup is older
    print(f"restored {config.name!r} at {config.base_url} from a backup made {about['created']} "
          f"(feed entry {about['feed_head_seq']}) into {args.data}")  # fmt: skip
    print("its feed is on hold: when it serves, it asks the nodes that follow it what they hold "
          "of its feed, and resumes once none holds more than this backup; see "
          "`aidnode resume-feed`")  # fmt: skip


def cmd_resume_feed(args: argparse.Namespace) -> None:
    config = load_config(Path(args.data))

    async def resume(node: Node) -> str:
        if node.feed.hold is None:
            return "the feed is not on hold"
        if args.force:
            await node.release_feed_hold(None, reason=f"released by the admin: {node.feed.hold}")
            return ("the feed is no longer on hold; allies that held more of it will see a fork "
                    "and must re-sync after checking this node's key with you")  # fmt: skip
        problem = await node.verify_restored_feed()
        if problem:
            raise CliError(f"still on hold: {problem}. If that cannot change (the newer entries "
                           "are lost for good), `aidnode resume-feed --force` resumes anyway")  # fmt: skip
        return "the feed is no longer on hold: no node that follows this one is ahead of it"

    print(_with_node(config, resume))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aidnode", description="A federated mutual-aid node.")
    parser.add_argument("--version", action="version", version=f"aidnode {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data", default=DEFAULT_DATA_DIR, help="the node's data directory")
        sub.set_defaults(func=func)
        return sub

    sub = command("init", cmd_init, "Create a node: settings, signing key and database.")
    sub.add_argument("--name", required=True, help="the group's name")
    sub.add_argument("--url", required=True, help="the node's public base URL, e.g. https://aid.example.org")
    sub.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    sub.add_argument("--port", type=int, help="port to listen on (default 8000)")

    sub = command("serve", cmd_serve, "Run the node.")
    sub.add_argument("--host", help="override the configured listen address")
    sub.add_argument("--port", type=int, help="override the configured port")
    sub.add_argument("--workers", type=int,
                     help="override the configured number of worker processes (one per core)")  # fmt: skip

    sub = command("create-admin", cmd_create_admin, "Create an admin account.")
    sub.add_argument("--username", required=True)
    sub.add_argument("--display-name", help="the name other members see (default: the username)")
    sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    sub = command("token", cmd_token, "Print a new API bearer token for a member.")
    sub.add_argument("--username", required=True)
    sub.add_argument("--label", help="a note to recognise the token by")

    sub = command("invite", cmd_invite, "Print a one-time invite link.")
    sub.add_argument("--role", choices=ROLES, default="member")

    key = commands.add_parser("key", help="Manage the node's signing key.")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="KEY_COMMAND")
    sub = key_commands.add_parser("rotate", help="Sign over the feed to a new key.",
                                  description="Append a key entry, signed by the current key, "
                                  "that hands the feed over to a new key.")  # fmt: skip
    sub.add_argument("--data", default=DEFAULT_DATA_DIR, help="the node's data directory")
    sub.set_defaults(func=cmd_key_rotate)

    peer = commands.add_parser("peer", help="Other nodes: add, list, trust, block.")
    peer_commands = peer.add_subparsers(dest="peer_command", required=True, metavar="PEER_COMMAND")
    for name, func, help_text in (
        ("add", cmd_peer_add, "Trust and follow a node: fetch its document, pin its key, read its feed."),
        ("list", cmd_peer_list, "List the nodes this node knows, with trust and health."),
        ("trust", _cmd_peer_trust("trusted"), "Trust a known node (its subscription is accepted)."),
        ("block", _cmd_peer_trust("blocked"), "Block a node: refuse its requests, drop its items."),
    ):
        sub = peer_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data", default=DEFAULT_DATA_DIR, help="the node's data directory")
        if name != "list":
            sub.add_argument("url", help="the node's base URL, e.g. https://aid.example.org")
        sub.set_defaults(func=func)

    command("check", cmd_check, "Verify the node's database, its whole feed chain and its items.")

    sub = command("demo", cmd_demo, "Run three federated demo nodes on this machine, with "
                  "sample offers, needs and a response, for a first look; Ctrl-C stops them.")  # fmt: skip
    sub.add_argument("--base-port", type=int, default=8101,
                     help="demo node i serves http://127.0.0.1:<base-port + i> (default 8101)")
    sub.set_defaults(data="./aidnode-demo")

    sub = command("backup", cmd_backup, "Write a backup of the node (settings, keys, database) "
                  "to a new file, while it runs.")  # fmt: skip
    sub.add_argument("output", help="the backup file to write, e.g. aidnode-2026-12-02.tar.gz")
    sub = command("restore", cmd_restore, "Restore a backup into a new data directory, its "
                  "feed on hold until no ally holds more of it.")  # fmt: skip
    sub.add_argument("backup", help="a file written by `aidnode backup`")
    sub = command("resume-feed", cmd_resume_feed, "After a restore: ask the nodes that follow "
                  "this one what they hold of its feed, and resume it if none is ahead.")  # fmt: skip
    sub.add_argument("--force", action="store_true",
                     help="resume even so, accepting that allies ahead of it see a fork")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except (CliError, ConfigError, NodeExists, StoreError, ProtocolError, BackupError) as error:
        print(f"aidnode {args.command}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ClientError as error:
        print(f"aidnode {args.command}: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"aidnode {args.command}: {error.strerror or error}: {error.filename or ''}".rstrip(": "),
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
