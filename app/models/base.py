"""The base of every table: SQLModel classes on a MetaData with a naming convention, so
migrations name constraints predictably; ``Col[T]``, how a column is annotated."""

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import BigInteger, Identity, MetaData, Table, func, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

if TYPE_CHECKING:
    # SQLModel types a column attribute as its value (``Code.lookup: str``), so queries such
    # as ``Code.lookup.in_(...)`` would not type-check. To mypy a column is SQLAlchemy's
    # ``Mapped[T]``, which is what it is: ``T`` on an object, a column expression on the class.
    from sqlalchemy.orm import Mapped

    Col = Mapped
else:

    class Col:
        """At run time ``Col[T]`` is ``T``: SQLModel and pydantic read the plain type."""

        def __class_getitem__(cls, item: Any) -> Any:
            return item


class Base(SQLModel, registry=registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))):
    """Tables subclass this with ``table=True``; ``Base.metadata`` is what Alembic compares."""

    __table__: ClassVar[Table]


def identity() -> Any:
    """A bigint primary key the database numbers: None on a new object."""
    return Field(default=None, primary_key=True, sa_type=BigInteger, sa_column_args=[Identity()])


def insert_time() -> Any:
    """When the row was inserted, by the database's clock: None on a new object."""
    return Field(default=None, sa_column_kwargs={"server_default": func.now()})


def counter() -> Any:
    """A bigint count that starts at 0, on a new object as in the database."""
    return Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": text("0")})


class Entity:
    """What every table listed newest first (app/pagination.py) has: ``created_at`` and
    ``updated_at``, set by the database, and an ``id``.

    A plain mixin rather than a SQLModel class: pydantic still collects its fields, but mypy's
    pydantic plugin retypes the fields a SQLModel class inherits as constructor arguments,
    which would make ``CouponSet.created_at.desc()`` an error. Each table declares its own
    ``id`` column, so that the plugin lists it among the constructor's arguments."""

    id: Col[uuid.UUID]
    created_at: Col[datetime] = insert_time()
    updated_at: Col[datetime] = Field(
        default=None, sa_column_kwargs={"server_default": func.now(), "onupdate": func.now()}
    )
