"""A median the ORM can group by, and the length of a JSON array, on PostgreSQL and
SQLite alike."""

import statistics

from django.db.backends.signals import connection_created
from django.db.models import Aggregate, FloatField, Func, IntegerField


class Median(Aggregate):
    """The median of the non-null values (PostgreSQL: ``percentile_cont(0.5)``)."""

    function = "PERCENTILE_CONT"
    name = "Median"
    output_field = FloatField()
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            function=SQLITE_MEDIAN,
            template="%(function)s(%(expressions)s)",
            **extra_context,
        )


SQLITE_MEDIAN = "chatsite_median"


class _SQLiteMedian:
    """SQLite has no median: one is registered on each connection, as Django registers
    its own SQL functions there."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float | None:
        return float(statistics.median(self.values)) if self.values else None


def _register(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate(SQLITE_MEDIAN, 1, _SQLiteMedian)


def register_sqlite_median() -> None:
    connection_created.connect(_register, dispatch_uid="review.sqlite_median")


class JsonArrayLength(Func):
    """The number of items of a JSON array column (a reply's tool calls)."""

    function = "jsonb_array_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="json_array_length", **extra_context)
