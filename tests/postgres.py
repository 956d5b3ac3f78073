"""A real PostgreSQL server for the tests: initdb in a temporary directory, on a free loopback port, one database
per caller (``scripts/system-packages --test`` installs the postgresql package)."""

from __future__ import annotations

import glob
import itertools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from tests.waiting import until

_names = itertools.count(1)


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} is missing: `scripts/system-packages --test` installs the postgresql package"
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self, port: int) -> None:
        self.port = port

    def database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"cellbox{next(_names)}"
        subprocess.run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "cellbox", name],
                       check=True, capture_output=True)
        return f"postgresql+psycopg://cellbox@127.0.0.1:{self.port}/{name}"


def node_of_container(database_url: str, cid: str) -> str:
    """The id of the node that runs container ``cid``, from the shared catalog (placement decides it, not the
    server that received the create)."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(sqlalchemy.text("SELECT node_id FROM containers WHERE id = :cid"),
                                          {"cid": cid}).scalar_one())
    finally:
        engine.dispose()


def running_postgres() -> Iterator[Postgres]:
    home = Path(tempfile.mkdtemp(prefix="cellbox-pg-", dir="/tmp"))
    shutil.chown(home, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, _bin("initdb"), "-D", str(home / "data"), "-A", "trust", "-U", "cellbox"],
                   check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen([*as_postgres, _bin("postgres"), "-D", str(home / "data"), "-k", str(home),
                               "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        ready = [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        until(lambda: subprocess.run(ready, capture_output=True).returncode == 0, "PostgreSQL accepting connections")
        yield Postgres(port)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)
