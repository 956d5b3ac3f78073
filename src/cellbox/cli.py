"""The ``cellbox`` command: ``serve`` (the OpenAI-compatible API), ``run`` (one file in a fresh container),
``keys create``. Exit status of ``run``: 0 ran cleanly, 1 the code raised (or timed out, or ran out of memory),
2 usage error, 3 this host cannot provide the sandbox. ``serve``: 0 stopped by a signal, 1 the port is in use,
2 usage error, 3 no sandbox on this host, 4 the data directory is in use, 5 the file store cannot be used."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
import uvloop
from pydantic import ValidationError

from cellbox import __version__
from cellbox import cli_remote as remote
from cellbox.api.app import create_app
from cellbox.config import Settings
from cellbox.errors import CellboxError, InvalidInput, NotFound, SandboxUnavailable, StoreUnavailable
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.events import Display, Error, ExecutionResult, Finished, Result, Stream
from cellbox.sandbox.workspace import safe_filename
from cellbox.services.auth import Keys
from cellbox.services.nodes import DRAINING, UP, Nodes, node_id_of
from cellbox.services.wiring import Services
from cellbox.store.datalock import DataDirInUse, DataDirLock
from cellbox.store.db import Database

EXIT_OK, EXIT_RAISED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_IN_USE, EXIT_STORE = 0, 1, 2, 3, 4, 5
SHUTDOWN_GRACE = 3  # seconds in-flight requests get after SIGINT/SIGTERM


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellbox", description="Self-hosted, OpenAI-compatible Code Interpreter.")
    parser.add_argument("--version", action="version", version=f"cellbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a Python file in a fresh container and print its output",
                              description="Run a Python file (or - for stdin) in a fresh, isolated container.")
    run.add_argument("script", help="Python file to run, or - to read the code from standard input")
    run.add_argument("--file", action="append", default=[], metavar="PATH",
                     help="copy a file into /mnt/data before running (repeatable)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="interrupt the code after this many seconds (default 60)")
    run.add_argument("--memory", default=None, metavar="SIZE", help="memory limit: 1g (default), 4g, 16g, 64g")
    run.add_argument("--json", action="store_true", help="print one JSON document with every output item")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="copy files the code created or changed in /mnt/data to DIR")
    serve = commands.add_parser("serve", help="serve the OpenAI-compatible API (Files, Containers, ...)",
                                description="Serve the OpenAI-compatible API under /v1.")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, CELLBOX_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000, CELLBOX_PORT)")
    serve.add_argument("--data-dir", type=Path, default=None, help="data directory (CELLBOX_DATA_DIR)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                       help="debug, info (default: one line per request), warning or error (CELLBOX_LOG_LEVEL)")
    mcp = commands.add_parser("mcp", help="serve MCP over stdio, relaying to a running Cellbox (for MCP hosts)")
    mcp.add_argument("--url", default=os.environ.get("CELLBOX_URL", "http://127.0.0.1:8000"),
                     help="the running Cellbox (default: $CELLBOX_URL or http://127.0.0.1:8000)")
    mcp.add_argument("--api-key", default=os.environ.get("CELLBOX_API_KEY", ""),
                     help="its API key (default: $CELLBOX_API_KEY; none in open local mode)")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an API key for a project; the key is printed once")
    create.add_argument("--project", required=True, help="project the key belongs to")
    listing = keys.add_parser("ls", help="list the API keys (their ids and projects; keys are never stored)")
    revoke = keys.add_parser("revoke", help="delete an API key by its id (a running server notices in seconds)")
    revoke.add_argument("key_id", help="the key's id, as `cellbox keys ls` shows it")
    for command in (create, listing, revoke):
        command.add_argument("--data-dir", type=Path, default=None, help="data directory (CELLBOX_DATA_DIR)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    nodes = commands.add_parser("node", help="list, drain or resume the nodes (servers that run containers)")
    node_commands = nodes.add_subparsers(dest="node_command", required=True)
    node_list = node_commands.add_parser("ls", help="list the servers: role, state, load and last heartbeat")
    node_list.add_argument("--json", action="store_true", help="one JSON document")
    drain = node_commands.add_parser("drain", help="take no new containers on a node; its own expire as usual")
    resume = node_commands.add_parser("resume", help="put a drained node back in service")
    for command in (drain, resume):
        command.add_argument("node_id", nargs="?", default=None, help="the node (default: this data directory's)")
    for command in (node_list, drain, resume):
        command.add_argument("--data-dir", type=Path, default=None, help="data directory (CELLBOX_DATA_DIR)")
    remote.add_commands(commands)
    return parser


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


async def _key_count(settings: Settings) -> int:
    db = Database(settings.database)
    try:
        await db.migrate()
        keys = Keys(db)
        await keys.start(settings.api_keys)
        return await keys.count()
    finally:
        await db.aclose()


def _serve(args: argparse.Namespace) -> None:
    settings = _settings(host=args.host, port=args.port, data_dir=args.data_dir, log_level=args.log_level)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)  # before anything else touches the directory; held until exit
    try:
        lock.acquire(f"http://{settings.host}:{settings.port}")
    except DataDirInUse as exc:
        _fail(str(exc), EXIT_IN_USE)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if settings.log_level != "debug":  # the MCP SDK and boto3 narrate at INFO: not an operator's business
        for chatty in ("mcp", "botocore", "boto3"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the start's own line says what was migrated
    try:
        keys = asyncio.run(_key_count(settings))  # migrates the schema first
    except StoreUnavailable as exc:
        _fail(f"cannot open the database: {exc}", EXIT_UNAVAILABLE)
    if not keys and not settings.loopback_only and settings.role != "node":  # a node answers peers only
        _usage_error(f"refusing to serve on {settings.host} without API keys: set CELLBOX_API_KEYS or run "
                     "`cellbox keys create --project NAME` (open mode is only allowed on loopback)")
    try:
        listener = socket.create_server((settings.host, settings.port))  # a port in use fails here, at once
    except OSError as exc:
        _fail(f"cannot listen on {settings.host}:{settings.port}: {os.strerror(exc.errno or 0)}", EXIT_RAISED)
    mode = f"{keys} API key(s)" if keys else "open local mode (no API keys; loopback only)"
    aliases = settings.aliases  # a malformed CELLBOX_MODEL_ALIASES is a usage error now, not a crash at start
    models = "/v1/responses is off until CELLBOX_UPSTREAM_BASE_URL names a model server"
    if settings.upstream_base_url:
        models = f"/v1/responses drives the model server at {settings.upstream_base_url}"
        if aliases:
            models += f" (aliases: {settings.model_aliases})"
    role = {"all": "", "api": " as an api server (containers run on the nodes)",
            "node": " as a node (for the cluster's servers only)"}[settings.role]
    banner = f"cellbox: serving http://{settings.host}:{settings.port}/v1{role} with {mode}; {models}"
    print(f"cellbox: starting (data directory {settings.data_dir}) ...", file=sys.stderr, flush=True)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_until_stopped(settings, listener, banner))
    except SandboxUnavailable as exc:
        _fail(f"cannot start the sandbox: {exc}", EXIT_UNAVAILABLE)
    except StoreUnavailable as exc:
        _fail(str(exc), EXIT_STORE)
    finally:
        lock.release()


class _Server(uvicorn.Server):
    """uvicorn's server, saying "serving" only once it accepts requests, and interrupting running code when asked to
    stop so that its requests end with a result within the grace period."""

    def __init__(self, config: uvicorn.Config, banner: str, services: Services) -> None:
        super().__init__(config)
        self._banner = banner
        self._services = services

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(self._banner, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, without raising the signal again afterwards: that would end the process before the
        containers are stopped. A stop by SIGINT or SIGTERM exits 0 once everything is down."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # uvicorn 0.54 re-raises what this list holds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        print("cellbox: stopping: interrupting running code, then stopping every container", file=sys.stderr,
              flush=True)
        await self._services.background.aclose()  # they end "failed: the server stopped", asking no model again
        for box in self._services.engine:
            box.interrupt()
        await super().shutdown(sockets)


class _QuietCancellation(logging.Filter):
    """A request still running after the grace period is cancelled on purpose: no traceback for that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


async def _serve_until_stopped(settings: Settings, listener: socket.socket, banner: str) -> None:
    """Start every service, then serve until SIGINT or SIGTERM. In-flight requests get GRACE seconds; then they
    are cancelled (running code is interrupted) and every container is stopped, its processes reaped."""
    services = Services(settings)
    try:
        await services.start()
        config = uvicorn.Config(create_app(settings, services), http="httptools", lifespan="on",
                                log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE)
        logging.getLogger("uvicorn.error").addFilter(_QuietCancellation())
        await _Server(config, banner, services).serve(sockets=[listener])
    finally:
        await services.aclose()


def _mcp(args: argparse.Namespace) -> None:
    from cellbox.api import mcp_stdio  # the MCP client stack, only for this command

    try:
        asyncio.run(mcp_stdio.serve(args.url, args.api_key))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # an unreachable server, a refused key: one line, for the host's log
        print(f"cellbox mcp: cannot relay to {args.url}/mcp: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _on_catalog(data_dir: Path | None, act: Callable[[Database, Settings], Awaitable[str]]) -> None:
    """Run ``act`` on the (migrated) catalog and print what it says: the keys and node commands work with or
    without a running server."""
    settings = _settings(data_dir=data_dir)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def opened() -> str:
        db = Database(settings.database)
        try:
            await db.migrate()
            return await act(db, settings)
        finally:
            await db.aclose()

    try:
        print(asyncio.run(opened()))
    except NotFound as exc:
        _fail(str(exc), EXIT_RAISED)
    except StoreUnavailable as exc:
        _fail(f"cannot open the database: {exc}", EXIT_UNAVAILABLE)


def _keys(args: argparse.Namespace) -> None:
    async def act(db: Database, _settings: Settings) -> str:
        keys = Keys(db)
        if args.keys_command == "create":
            return await keys.create(args.project)
        if args.keys_command == "revoke":
            return f"revoked {args.key_id} (project {await keys.revoke(args.key_id)})"
        rows = await keys.list()
        if args.json:
            return json.dumps([{"id": i, "project": p, "created_at": c} for i, p, c in rows])
        return remote.table(["ID", "PROJECT", "CREATED"], [[i, p, remote.when(c)] for i, p, c in rows])

    _on_catalog(args.data_dir, act)


def _node(args: argparse.Namespace) -> None:
    """Nodes live in the (shared) database; ``drain`` and ``resume`` default to this data directory's node."""

    async def act(db: Database, settings: Settings) -> str:
        nodes = Nodes(db, settings, node_id_of(settings.data_dir))
        if args.node_command in ("drain", "resume"):
            row = await nodes.set_state(args.node_id or nodes.id, DRAINING if args.node_command == "drain" else UP)
            return f"node {row.id} is {row.state} (a running node notices at its next heartbeat)"
        rows = await nodes.list()
        if args.json:
            return json.dumps([{"id": r.id, "role": r.role, "url": r.url, "state": r.state, "containers": r.containers,
                                "max_containers": r.max_containers, "memory_available": r.memory_available,
                                "heartbeat_at": r.heartbeat_at, "version": r.version} for r in rows])
        return remote.table(["ID", "ROLE", "URL", "STATE", "CONTAINERS", "HEARTBEAT"],
                            [[r.id + (" (this)" if r.id == nodes.id else ""), r.role, r.url, r.state,
                              f"{r.containers}/{r.max_containers}", remote.when(r.heartbeat_at)] for r in rows])

    _on_catalog(args.data_dir, act)


def _fail(message: str, status: int) -> NoReturn:
    print(f"cellbox: {message}", file=sys.stderr)
    raise SystemExit(status)


def _usage_error(message: str) -> NoReturn:
    print(f"cellbox: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _read_code(script: str) -> str:
    if script == "-":
        return sys.stdin.read()
    try:
        return Path(script).read_text()
    except OSError as exc:
        _usage_error(f"cannot read {script}: {exc.strerror}")
    except UnicodeDecodeError:
        _usage_error(f"{script} is not a UTF-8 text file")


def _read_inputs(paths: list[str]) -> dict[str, bytes]:
    inputs: dict[str, bytes] = {}
    for path in paths:
        try:
            inputs[safe_filename(Path(path).name)] = Path(path).read_bytes()
        except OSError as exc:
            _usage_error(f"cannot read --file {path}: {exc.strerror}")
    return inputs


def _print_live(event: Any) -> None:
    """The code's output as it comes, its control characters escaped (terminal escapes never reach the
    terminal as they are; ``--json`` has the exact text)."""
    shown = remote.printable
    if isinstance(event, Stream):
        stream = sys.stdout if event.name == "stdout" else sys.stderr
        stream.write(shown(event.text))
        stream.flush()
    elif isinstance(event, Display | Result):
        if "text/plain" in event.data and not (isinstance(event, Display) and "image/png" in event.data):
            print(shown(event.data["text/plain"]), flush=True)
        elif "image/png" in event.data:
            size = len(base64.b64decode(event.data["image/png"]))
            print(f"[image/png, {size} bytes]", flush=True)
    elif isinstance(event, Error):
        print(shown(event.text), file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, code: str, inputs: dict[str, bytes]) -> int:
    with tempfile.TemporaryDirectory(prefix="cellbox-run-") as data_dir:
        settings = Settings(data_dir=Path(data_dir))
        async with Engine(settings) as engine:
            box = await engine.create(memory=args.memory)
            for name, data in inputs.items():
                box.upload(name, data)
            result = await _execute(box, code, args.timeout, live=not args.json)
            if args.out is not None:
                _copy_out(box, result, args.out)
            if args.json:
                document = {"isolation": engine.isolation(), **result.to_dict()}
                print(json.dumps(document, indent=2))
            else:
                _report_files(result, args.out)
    return EXIT_OK if result.ok else EXIT_RAISED


async def _execute(box: Any, code: str, timeout: float | None, live: bool) -> ExecutionResult:
    outputs = []
    async for event in box.execute(code, timeout):
        if isinstance(event, Finished):
            if live and event.message:
                print(remote.printable(event.message), file=sys.stderr)
            return ExecutionResult(outputs, event.status, event.execution_count, event.files,
                                   event.restarted, event.message, event.deleted)
        outputs.append(event)
        if live:
            _print_live(event)
    raise CellboxError("execution ended without a result")


def _copy_out(box: Any, result: ExecutionResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for changed in result.files:
        relative = changed.path.removeprefix("/mnt/data/")
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with box.open(changed.path) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)


def _report_files(result: ExecutionResult, out: Path | None) -> None:
    for changed in result.files:
        where = f" -> {out / changed.path.removeprefix('/mnt/data/')}" if out else ""
        print(f"[file] {remote.printable(changed.path, lines=False)} ({changed.bytes} bytes){where}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "node":
            return _node(args)
        if args.command in remote.COMMANDS:
            return remote.run(args)
        if args.command == "mcp":
            return _mcp(args)
        _run_command(args)
    except InvalidInput as exc:
        _usage_error(str(exc))
    except ValidationError as exc:  # a CELLBOX_* setting
        _usage_error("invalid configuration: " + "; ".join(_setting_error(e) for e in exc.errors()))


def _setting_error(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"CELLBOX_{'_'.join(map(str, error['loc'])).upper()}: {message}" if error["loc"] else message


def _run_command(args: argparse.Namespace) -> None:
    if args.timeout is not None and args.timeout <= 0:
        _usage_error("--timeout must be a positive number of seconds")
    code = _read_code(args.script)
    inputs = _read_inputs(args.file)
    try:
        status = asyncio.run(_run(args, code, inputs))
    except SandboxUnavailable as exc:
        print(f"cellbox: cannot start the sandbox: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    except InvalidInput as exc:
        _usage_error(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(status)


if __name__ == "__main__":
    main()
