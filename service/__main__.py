"""Command line: serve (the default), migrate, outbox stats|dead|requeue, ask."""

from __future__ import annotations

import argparse
import asyncio
import sys

from service.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (default)")
    commands.add_parser("migrate", help="apply pending migrations and exit")
    args = parser.parse_args(argv)
    config = Config.from_env()

    from service.logs import setup_logging

    setup_logging(config.log_json, config.log_level)
    if args.command in (None, "serve"):
        from service.server import serve

        serve(config)
        return 0
    if args.command == "migrate":
        from service.cli import run_migrate

        return asyncio.run(run_migrate(config))
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
