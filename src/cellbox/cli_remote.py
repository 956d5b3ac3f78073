"""CLI commands that talk to a running server (``cellbox status``, ``cellbox containers ls | rm | exec``), with
readable tables or ``--json``. Failures are one line on stderr and exit status 1.

Names and outputs come from containers, so from whoever runs code there: control characters (terminal escapes)
are shown escaped, never sent to the operator's terminal as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from cellbox.client import CellboxAPIError, Client
from cellbox.schemas.containers import Execution, ImageOutput, LogsOutput

COMMANDS = ("status", "containers")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, lines: bool = True) -> str:
    """``text`` with every control character escaped (newlines and tabs kept when ``lines``)."""
    escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
    return escaped if lines else escaped.replace("\n", "\\n").replace("\t", "\\t")


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("CELLBOX_URL", "http://127.0.0.1:8000"),
                        help="the running Cellbox (default: $CELLBOX_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=os.environ.get("CELLBOX_API_KEY", ""),
                        help="its API key (default: $CELLBOX_API_KEY; none in open local mode)")
    parser.add_argument("--json", action="store_true", help="one JSON document")


def add_commands(commands: Any) -> None:
    _connection(commands.add_parser("status", help="what a running server says about itself"))
    containers = commands.add_parser("containers", help="list, delete or run code in a running server's containers")
    actions = containers.add_subparsers(dest="containers_command", required=True)
    _connection(actions.add_parser("ls", help="list containers"))
    rm = actions.add_parser("rm", help="delete containers")
    rm.add_argument("ids", nargs="+", metavar="ID")
    _connection(rm)
    run = actions.add_parser("exec", help="run code in a container; outputs as they come")
    run.add_argument("id", metavar="ID")
    run.add_argument("code", help="the code, or - to read it from standard input")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    _connection(run)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[printable(str(cell), lines=False) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[n]) for row in cells) for n in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def run(args: argparse.Namespace) -> None:
    try:
        with Client(args.url, args.api_key or None) as client:
            if args.command == "status":
                _status(client, args.json)
            elif args.containers_command == "ls":
                _list(client, args.json)
            elif args.containers_command == "rm":
                for cid in args.ids:
                    client.containers.delete(cid)
                    print(json.dumps({"id": cid, "deleted": True}) if args.json else f"deleted {cid}")
            else:
                raise SystemExit(_exec(client, args))
    except CellboxAPIError as exc:
        print(f"cellbox: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except httpx.HTTPError as exc:
        print(f"cellbox: cannot reach {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        raise SystemExit(1) from None


def _status(client: Client, as_json: bool) -> None:
    health = client.health()
    if as_json:
        print(json.dumps(health))
        return
    isolation, pool = health.get("isolation", {}), health.get("warm_pool", {})
    for name, value in (("status", health.get("status")), ("version", health.get("version")),
                        ("auth", health.get("auth")), ("isolation", isolation.get("mode")),
                        ("warm pool", f"{pool.get('ready')}/{pool.get('size')} ready")):
        print(f"{name:<10} {value}")


def _list(client: Client, as_json: bool) -> None:
    boxes = client.containers.list()
    if as_json:
        print(json.dumps([box.model_dump() for box in boxes]))
        return
    print(table(["ID", "NAME", "STATUS", "MEMORY", "LAST ACTIVE"],
                [[b.id, b.name, b.status, b.memory_limit, when(b.last_active_at)] for b in boxes]))


def _exec(client: Client, args: argparse.Namespace) -> int:
    code = sys.stdin.read() if args.code == "-" else args.code
    finished: Execution | None = None
    for item in client.containers.stream(args.id, code, args.timeout):
        if isinstance(item, Execution):
            finished = item
        elif not args.json and isinstance(item, LogsOutput):
            print(printable(item.logs), end="", flush=True)
        elif not args.json and isinstance(item, ImageOutput):
            print("[image]", flush=True)
    assert finished is not None
    if args.json:
        print(finished.model_dump_json())
    else:
        for file in finished.files:
            print(f"[file: {printable(file.path, lines=False)} ({file.bytes} bytes, {file.id})]")
        if finished.message:
            print(f"[{printable(finished.message)}]", file=sys.stderr)
    return 0 if finished.status == "completed" else 1
