"""Command line: serve (the default), migrate, outbox stats|dead|requeue, ask, config."""

from __future__ import annotations

import argparse
import asyncio
import sys

from loguru import logger

from outbox.migrations import MigrationError
from service.config import Config, ConfigError, markdown_table
from service.extras import MissingExtra

# The `ask` client's packages (the `cli` extra).
CLI_MODULES = frozenset({"httpx", "httpx_sse"})


def main(argv: list[str] | None = None) -> int:
    """Start-up failures an operator can act on are one line naming what to do, never a traceback."""
    try:
        return _run(argv)
    except ConfigError as exc:
        print(f"configuration refused: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, MissingExtra) as exc:
        logger.bind(code="startup_failed").error("{}", exc)
        return 1


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (default)")
    commands.add_parser("migrate", help="apply pending migrations and exit")
    outbox = commands.add_parser("outbox", help="inspect the outbox and requeue dead letters")
    outbox.add_argument("action", choices=("stats", "dead", "requeue", "purge-dead"))
    outbox.add_argument("seqs", nargs="*", type=int, help="requeue: the outbox seq numbers to requeue")
    outbox.add_argument("--all", action="store_true", help="requeue: every dead letter")
    outbox.add_argument("--limit", type=int, default=100, help="dead: how many to list")
    outbox.add_argument("--after-seq", type=int, default=0, help="dead: list those after this seq")
    outbox.add_argument(
        "--older-than-s", type=float, default=7 * 24 * 3600, help="purge-dead: dead for longer than this"
    )
    ask = commands.add_parser("ask", help="stream a reply from a running service to the terminal")
    ask.add_argument("message")
    ask.add_argument("--url", help="the service (default: http://ECO_HOST:ECO_PORT)")
    ask.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for the next byte")
    settings = commands.add_parser("config", help="print the configuration's variables")
    settings.add_argument("--markdown", action="store_true", required=True, help="as the README's table")
    args = parser.parse_args(argv)
    if args.command == "config":
        print(markdown_table(), end="")
        return 0
    config = Config.from_env()

    from service.runtime.logs import setup_logging

    setup_logging(config.log_json, config.log_level)
    if args.command in (None, "serve"):
        if config.processes > 1 or config.relay_apart:
            from service.runtime.processes import supervise

            supervise(config)
        else:
            from service.runtime.server import serve

            serve(config)
        return 0
    if args.command == "ask":
        try:
            from service.cli.client import run_ask
        except ImportError as exc:
            if exc.name not in CLI_MODULES:
                raise
            raise MissingExtra("cli", "`python -m service ask`", exc.name) from None

        return run_ask(args.url or f"http://{config.host}:{config.port}", args.message, args.timeout_s)
    if args.command == "migrate":
        from service.cli.admin import run_migrate

        return asyncio.run(run_migrate(config))
    if args.command == "outbox":
        from service.cli.admin import run_outbox

        return asyncio.run(
            run_outbox(
                config,
                args.action,
                limit=args.limit,
                after_seq=args.after_seq,
                seqs=args.seqs,
                all_=args.all,
                older_than_s=args.older_than_s,
            )
        )
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
