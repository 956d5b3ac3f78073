"""Schema migrations (Alembic): every server brings its database to this release's schema at start.

A revision is a frozen step, written once and never edited: ``versions/`` holds them in order. Add one with
``.venv/bin/alembic revision --autogenerate -m "what changes"`` (``alembic.ini`` at the top of the repository points
here), then read and trim what it wrote. ``tests/unit/store/test_migrations.py`` fails while the tables in
``store/tables.py`` and the newest revision disagree.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from cellbox.errors import StoreUnavailable

HERE = Path(__file__).parent


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without an ini file; ``env.py`` migrates ``connection`` when one is given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(config()).get_current_head() or ""


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> tuple[str | None, str]:
    """Bring the database on ``connection`` to the newest revision, inside the caller's transaction; the revisions
    it was at before and is at now.

    A database that a newer release migrated is refused rather than touched: its tables may hold what this code
    would misread.
    """
    cfg = config(connection)
    at = current(connection)
    known = {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}
    if at is not None and at not in known:
        raise StoreUnavailable(
            f"the database's schema is at revision {at!r}, which this Cellbox does not know: "
            "a newer release migrated it; run that release (or newer)"
        )
    command.upgrade(cfg, "head")
    return at, head()
