"""The tables. ``seq`` gives every row a stable creation order for cursor pagination (seconds tie often)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, Label, RowMapping, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long-lived sequences.
Seq = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


M = TypeVar("M", bound=Base)


# Point lookups select these columns in Core and build the object themselves: an ORM select costs about twice as
# much per request, mostly in loading (BENCHMARKS.md, stop 12).

def columns(model: type[Base], prefix: str = "") -> list[Label[Any]]:
    """``model``'s columns for a Core select, each named ``prefix`` + its attribute (joins keep them apart)."""
    return [column.label(prefix + column.key) for column in model.__table__.columns]


def built(model: type[M], row: RowMapping, prefix: str = "") -> M:
    """A (transient) ``model`` object from a Core row's :func:`columns`."""
    return model(**{column.key: row[prefix + column.key] for column in model.__table__.columns})


def values(obj: Base) -> dict[str, Any]:
    """What a Core insert of ``obj`` writes: the columns it has set (an unset ``seq`` is the database's to give)."""
    return {column.key: value for column in obj.__table__.columns if (value := getattr(obj, column.key)) is not None}


class ApiKey(Base):
    __tablename__ = "api_keys"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class FileRow(Base):
    __tablename__ = "files"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    __table_args__ = (Index("ix_files_project_seq", "project", "seq"),)


class ContainerRow(Base):
    __tablename__ = "containers"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # running | expired
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int] = mapped_column(BigInteger)
    expiry_minutes: Mapped[int] = mapped_column(Integer)
    memory_limit: Mapped[str] = mapped_column(String(8))
    workspace: Mapped[str | None] = mapped_column(Text, nullable=True)  # host path of the volume while running
    # The node whose engine runs it (None: made before nodes existed; the first node to start takes those).
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Loaded with the row (one LEFT JOIN): None for the usual container without network access.
    network: Mapped[ContainerNetworkRow | None] = relationship(lazy="joined", cascade="all, delete-orphan",
                                                              passive_deletes=True)
    __table_args__ = (Index("ix_containers_project_seq", "project", "seq"),)


class NodeRow(Base):
    """A server as it last reported itself: its heartbeat says it is alive, its load where new containers fit (an
    api server runs none). ``state`` is up, draining (takes no new containers) or down (lost: its containers
    expired)."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[int] = mapped_column(BigInteger)
    heartbeat_at: Mapped[int] = mapped_column(BigInteger)
    containers: Mapped[int] = mapped_column(Integer)
    max_containers: Mapped[int] = mapped_column(Integer)
    memory_available: Mapped[int] = mapped_column(BigInteger)  # bytes the machine has free
    role: Mapped[str] = mapped_column(String(16), server_default="all")  # all, api (runs no containers) or node


class ContainerNetworkRow(Base):
    """A container's allowlist (its own table: containers made before it existed need no migration). Secrets
    are never stored: ``had_secrets`` only says there were some, held in memory while the container ran."""

    __tablename__ = "container_networks"
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"), primary_key=True)
    allowed_domains: Mapped[list[str]] = mapped_column(JSON)
    had_secrets: Mapped[bool] = mapped_column(default=False)


class ContainerFileRow(Base):
    __tablename__ = "container_files"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))  # user | assistant
    created_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("container_id", "path"),
        Index("ix_container_files_container_seq", "container_id", "seq"),
    )


class ResponseRow(Base):
    """A stored response: its status for lookups, and its whole body (with every output, always) as JSON."""

    __tablename__ = "responses"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # the server running it


class ResponseItemRow(Base):
    """One input item of a response, in order; replayed items keep their own ids, so ids repeat across responses."""

    __tablename__ = "response_items"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (
        UniqueConstraint("response_id", "id"),
        Index("ix_response_items_response_seq", "response_id", "seq"),
    )


class StoredItemRow(Base):
    """Every item a stored response took or made, findable by id within its project, for ``item_reference``
    inputs. Replayed items keep their ids, so an id can repeat: the newest row wins."""

    __tablename__ = "stored_items"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(200))
    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (Index("ix_stored_items_project_id", "project", "id"),)


class ConversationRow(Base):
    """A conversation: its items live in ``conversation_items``, in order."""

    __tablename__ = "conversations"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON)


class ConversationItemRow(Base):
    """One item of a conversation (an input or an output of its responses, or one added directly)."""

    __tablename__ = "conversation_items"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    __table_args__ = (
        UniqueConstraint("conversation_id", "id"),
        Index("ix_conversation_items_conversation_seq", "conversation_id", "seq"),
    )
