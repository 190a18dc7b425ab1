"""The read queries both stores run, written once, for a ``Dialect``.

SQLite (≥ 3.30, for ``FILTER``) and PostgreSQL agree on nearly all of it.
Queries are written with ``?`` marks; a ``Dialect`` says the rest: its mark,
"is not the same as" between nullable values, reading a number from a span's
JSON body, and an attribute filter. Each function returns ``(sql, params)``;
the store runs it on its own connections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracerelay.server.storage.base import ApiKey, TraceQuery

__all__ = [
    "LIST_KEYS",
    "NEXT_JOB",
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "api_key",
    "dependencies",
    "get_job",
    "key_by_hash",
    "red",
    "search_traces",
    "services",
    "usage",
]

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


def search_traces(d: Dialect, project_id: str, query: TraceQuery) -> Query:
    """Trace rows matching ``query``, newest first (start, then trace id, descending).

    Every condition is on the ``traces`` row and its indexes, but attribute
    filters, which look for one span of the trace carrying the attribute."""
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
    return d.sql(sql), [*params, query.limit]


def services(d: Dialect, project_id: str, since_ns: int, until_ns: int) -> Query:
    """Per service in the window: spans, errors, first and last start."""
    return d.sql(
        "SELECT service, count(*) AS spans, count(*) FILTER (WHERE status_code = 'error') "
        "AS errors, min(start_ns) AS first_ns, max(start_ns) AS last_ns FROM spans "
        "WHERE project_id = ? AND start_ns >= ? AND start_ns < ? AND service IS NOT NULL "
        "GROUP BY service ORDER BY service"
    ), [project_id, since_ns, until_ns]


def dependencies(d: Dialect, project_id: str, since_ns: int, until_ns: int) -> Query:
    """Service → service call counts and errors, from child spans whose parent span
    belongs to another service (the child's status counts as the call's)."""
    return d.sql(
        "SELECT p.service AS parent, c.service AS child, count(*) AS calls, "
        "count(*) FILTER (WHERE c.status_code = 'error') AS errors FROM spans c JOIN spans p "
        "ON p.project_id = c.project_id AND p.trace_id = c.trace_id "
        "AND p.span_id = c.parent_span_id "
        "WHERE c.project_id = ? AND c.start_ns >= ? AND c.start_ns < ? "
        f"AND p.service {d.distinct} c.service GROUP BY 1, 2 ORDER BY 1, 2"
    ), [project_id, since_ns, until_ns]


def red(d: Dialect, project_id: str, since_ns: int, until_ns: int, service: str | None) -> Query:
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
    return d.sql(
        f"WITH d AS (SELECT service, name, end_ns - start_ns AS duration_ns, status_code, "
        f"row_number() OVER (PARTITION BY service, name ORDER BY end_ns - start_ns) AS rn, "
        f"count(*) OVER (PARTITION BY service, name) AS n FROM spans WHERE {where}) "
        f"SELECT service, name AS operation, max(n) AS count, "
        f"count(*) FILTER (WHERE status_code = 'error') AS errors, {ranks} "
        f"FROM d GROUP BY service, name ORDER BY service, name"
    ), params


def usage(d: Dialect, project_id: str, since_ns: int, until_ns: int) -> Query:
    """Per model in the window: generations, tokens and cost (read from span bodies)."""
    tokens = ", ".join(
        f"{d.int_sum(d.json_int('usage.' + name))} AS {name}"
        for name in ("input_tokens", "output_tokens", "total_tokens")
    )
    return d.sql(
        f"SELECT model, count(*) AS generations, {tokens}, "
        f"coalesce(sum({d.json_float('cost_usd')}), 0) AS cost_usd "
        "FROM spans WHERE project_id = ? AND start_ns >= ? AND start_ns < ? "
        "AND model IS NOT NULL GROUP BY model ORDER BY model"
    ), [project_id, since_ns, until_ns]


NEXT_JOB = (
    "SELECT job_id, project_id, body FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1"
)
"""The oldest queued job, body included (no parameters)."""


def get_job(d: Dialect, project_id: str, job_id: str) -> Query:
    """A job of ``project_id``, without its body."""
    return d.sql(
        "SELECT job_id, status, created_at, finished_at, events, result FROM jobs "
        "WHERE project_id = ? AND job_id = ?"
    ), [project_id, job_id]


_KEYS = (
    "SELECT k.key_id, k.key_hash, k.project_id, p.name AS project_name, k.scopes, k.name, "
    "k.created_at, k.revoked_at FROM api_keys k JOIN projects p ON p.id = k.project_id"
)


LIST_KEYS = _KEYS + " ORDER BY k.created_at"
"""Every key, revoked ones included, oldest first (no parameters)."""


def key_by_hash(d: Dialect, key_hash: str) -> Query:
    """The key with this hash."""
    return d.sql(_KEYS + " WHERE k.key_hash = ?"), [key_hash]


def api_key(row: Any) -> ApiKey:
    """An ``ApiKey`` from a row (by column name) of ``LIST_KEYS`` / ``key_by_hash``."""
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
