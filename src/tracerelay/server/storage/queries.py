"""The reads both stores run, and their project and key bookkeeping, written once.

SQLite (≥ 3.30, for ``FILTER``) and PostgreSQL agree on nearly all of it.
Queries are written with ``?`` marks; a ``Dialect`` says the rest: its mark,
"is not the same as" between nullable values, reading a number from a span's
JSON body, and an attribute filter. ``SqlReads`` holds the methods; a store
inherits them and runs their SQL on its own connections.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tracerelay.server.storage.base import ApiKey, TraceQuery

__all__ = ["POSTGRES", "SQLITE", "Dialect", "SqlReads"]

Query = tuple[str, list[Any]]


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases' SQL."""

    mark: str
    distinct: str  # "is not the same as", NULLs compared as values
    json_int: Callable[[str], str]  # a body path ("usage.input_tokens") → an integer
    json_float: Callable[[str], str]  # a body path → a float
    int_sum: Callable[[str], str]  # the sum of an integer expression, 0 for none
    attribute: Callable[[str, str], Query]  # (key, value) → a condition on span ``s``

    def sql(self, query: str) -> str:
        """``query`` with this dialect's parameter marks."""
        return query if self.mark == "?" else query.replace("?", self.mark)


def _sqlite_json(path: str) -> str:
    return f"json_extract(body, '$.{path}')"


def _sqlite_attribute(key: str, value: str) -> Query:
    # Attributes keep their JSON type: "3" finds the number 3 as well as the text "3".
    return "json_extract(s.body, ?) IN (?, ?)", [f'$.attributes."{key}"', value, _number_or(value)]


def _postgres_json(path: str, cast: str) -> str:
    *parents, leaf = path.split(".")
    steps = "".join(f"->'{name}'" for name in parents)
    return f"(body{steps}->>'{leaf}')::{cast}"


SQLITE = Dialect(
    mark="?",
    distinct="IS NOT",
    json_int=_sqlite_json,
    json_float=_sqlite_json,
    int_sum=lambda expr: f"coalesce(sum({expr}), 0)",
    attribute=_sqlite_attribute,
)
POSTGRES = Dialect(
    mark="%s",
    distinct="IS DISTINCT FROM",
    json_int=lambda path: _postgres_json(path, "bigint"),
    json_float=lambda path: _postgres_json(path, "float8"),
    int_sum=lambda expr: f"coalesce(sum({expr}), 0)::bigint",  # sum(bigint) is numeric
    attribute=lambda key, value: ("s.body -> 'attributes' ->> ? = ?", [key, value]),
)


class SqlReads(ABC):
    """The reads and the project and key bookkeeping both stores share, as methods.

    A store gives its ``dialect`` and two runners on its own connections: ``_rows``
    (reads, rows as dicts) and ``_admin`` (projects and keys, rows by column name)."""

    dialect: Dialect

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Run a read; its rows as dicts."""

    @abstractmethod
    def _admin(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a project or key statement; its rows, by column name."""

    def search_traces(self, project_id: str, query: TraceQuery) -> list[dict[str, Any]]:
        """Trace rows matching ``query``, newest first (start, then trace id, descending).

        Every condition is on the ``traces`` row and its indexes, but attribute
        filters, which look for one span of the trace carrying the attribute."""
        d = self.dialect
        where = ["t.project_id = ?", "t.start_ns IS NOT NULL"]
        params: list[Any] = [project_id]
        for column, value in (
            ("t.service", query.service),
            ("coalesce(t.name, t.root_name)", query.name),
            ("t.user_id", query.user_id),
            ("t.session_id", query.session_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.status == "error":
            where.append("t.error_count > 0")
        elif query.status == "ok":
            where.append("t.error_count = 0")
        if query.min_duration_ns is not None:
            where.append("t.end_ns - t.start_ns >= ?")
            params.append(query.min_duration_ns)
        if query.since_ns is not None:
            where.append("t.start_ns >= ?")
            params.append(query.since_ns)
        if query.until_ns is not None:
            where.append("t.start_ns < ?")
            params.append(query.until_ns)
        for key, value in query.attributes:
            condition, values = d.attribute(key, value)
            where.append(
                "EXISTS (SELECT 1 FROM spans s WHERE s.project_id = t.project_id AND "
                f"s.trace_id = t.trace_id AND {condition})"
            )
            params += values
        if query.before is not None:  # the cursor: (start, trace id) below the last one shown
            where.append("(t.start_ns < ? OR (t.start_ns = ? AND t.trace_id < ?))")
            params += [query.before[0], query.before[0], query.before[1]]
        sql = (
            "SELECT t.* FROM traces t WHERE " + " AND ".join(where)
            + " ORDER BY t.start_ns DESC, t.trace_id DESC LIMIT ?"
        )  # fmt: skip
        return self._rows(d.sql(sql), [*params, query.limit])

    def services(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Per service in the window: spans, errors, first and last start."""
        return self._rows(
            self.dialect.sql(
                "SELECT service, count(*) AS spans, "
                "count(*) FILTER (WHERE status_code = 'error') AS errors, "
                "min(start_ns) AS first_ns, max(start_ns) AS last_ns FROM spans "
                "WHERE project_id = ? AND start_ns >= ? AND start_ns < ? "
                "AND service IS NOT NULL GROUP BY service ORDER BY service"
            ),
            [project_id, since_ns, until_ns],
        )

    def dependencies(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Service → service call counts and errors, from child spans whose parent span
        belongs to another service (the child's status counts as the call's)."""
        return self._rows(
            self.dialect.sql(
                "SELECT p.service AS parent, c.service AS child, count(*) AS calls, "
                "count(*) FILTER (WHERE c.status_code = 'error') AS errors "
                "FROM spans c JOIN spans p "
                "ON p.project_id = c.project_id AND p.trace_id = c.trace_id "
                "AND p.span_id = c.parent_span_id "
                "WHERE c.project_id = ? AND c.start_ns >= ? AND c.start_ns < ? "
                f"AND p.service {self.dialect.distinct} c.service GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            [project_id, since_ns, until_ns],
        )

    def red(
        self, project_id: str, since_ns: int, until_ns: int, service: str | None
    ) -> list[dict[str, Any]]:
        """Per (service, operation): count, errors and nearest-rank p50/p95/p99 of the
        duration, in one pass with window functions (rank ⌈n·p/100⌉, as percentile_disc)."""
        where = "project_id = ? AND start_ns >= ? AND start_ns < ? AND end_ns IS NOT NULL"
        params: list[Any] = [project_id, since_ns, until_ns]
        if service is not None:
            where += " AND service = ?"
            params.append(service)
        ranks = ", ".join(
            f"min(CASE WHEN rn >= (n * {p} + 99) / 100 THEN duration_ns END) AS p{p}"
            for p in (50, 95, 99)
        )
        return self._rows(
            self.dialect.sql(
                f"WITH d AS (SELECT service, name, end_ns - start_ns AS duration_ns, "
                f"status_code, row_number() OVER (PARTITION BY service, name "
                f"ORDER BY end_ns - start_ns) AS rn, "
                f"count(*) OVER (PARTITION BY service, name) AS n FROM spans WHERE {where}) "
                f"SELECT service, name AS operation, max(n) AS count, "
                f"count(*) FILTER (WHERE status_code = 'error') AS errors, {ranks} "
                f"FROM d GROUP BY service, name ORDER BY service, name"
            ),
            params,
        )

    def usage(self, project_id: str, since_ns: int, until_ns: int) -> list[dict[str, Any]]:
        """Per model in the window: generations, tokens and cost (read from span bodies)."""
        d = self.dialect
        tokens = ", ".join(
            f"{d.int_sum(d.json_int('usage.' + name))} AS {name}"
            for name in ("input_tokens", "output_tokens", "total_tokens")
        )
        return self._rows(
            d.sql(
                f"SELECT model, count(*) AS generations, {tokens}, "
                f"coalesce(sum({d.json_float('cost_usd')}), 0) AS cost_usd "
                "FROM spans WHERE project_id = ? AND start_ns >= ? AND start_ns < ? "
                "AND model IS NOT NULL GROUP BY model ORDER BY model"
            ),
            [project_id, since_ns, until_ns],
        )

    def next_job(self) -> dict[str, Any] | None:
        """The oldest queued job, body included."""
        rows = self._rows(
            "SELECT job_id, project_id, body FROM jobs WHERE status = 'queued' "
            "ORDER BY created_at LIMIT 1",
            [],
        )
        return rows[0] if rows else None

    def get_job(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        """A job of ``project_id``, without its body."""
        rows = self._rows(
            self.dialect.sql(
                "SELECT job_id, status, created_at, finished_at, events, result FROM jobs "
                "WHERE project_id = ? AND job_id = ?"
            ),
            [project_id, job_id],
        )
        return rows[0] if rows else None

    # -- projects and keys -------------------------------------------------------------

    def ensure_project(self, name: str) -> str:
        """The id of project ``name``, made if needed (its id is its name)."""
        self._admin(
            self.dialect.sql(
                "INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING"
            ),
            (name, name, time.time()),
        )
        return name

    def project_count(self) -> int:
        """How many projects exist."""
        return int(self._admin("SELECT count(*) AS n FROM projects")[0]["n"])

    def add_key(self, key: ApiKey) -> None:
        """Store a new key."""
        self._admin(
            self.dialect.sql(
                "INSERT INTO api_keys (key_hash, key_id, project_id, scopes, name, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (key.key_hash, key.key_id, key.project_id, ",".join(sorted(key.scopes)), key.name,
             key.created_at),
        )  # fmt: skip

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return [_api_key(row) for row in self._admin(_KEYS + " ORDER BY k.created_at")]

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None."""
        rows = self._admin(self.dialect.sql(_KEYS + " WHERE k.key_hash = ?"), (key_hash,))
        return _api_key(rows[0]) if rows else None

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Revoke a key (a revoked key keeps its first revocation time); False if there is
        no such key."""
        if not self._admin(self.dialect.sql("SELECT 1 FROM api_keys WHERE key_id = ?"), (key_id,)):
            return False
        self._admin(
            self.dialect.sql(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?"
            ),
            (at, key_id),
        )
        return True


_KEYS = (
    "SELECT k.key_id, k.key_hash, k.project_id, p.name AS project_name, k.scopes, k.name, "
    "k.created_at, k.revoked_at FROM api_keys k JOIN projects p ON p.id = k.project_id"
)


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        row["key_id"],
        row["key_hash"],
        row["project_id"],
        row["project_name"],
        frozenset(s for s in row["scopes"].split(",") if s),
        row["name"],
        row["created_at"],
        row["revoked_at"],
    )


def _number_or(value: str) -> Any:
    """``value`` as the number it spells (attributes keep their JSON type), else itself."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value
