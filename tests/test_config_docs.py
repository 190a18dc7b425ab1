"""docs/configuration.md documents exactly the options of ``tracerelay.config``.

The tables are parsed and compared with ``options()``: the same names in the
same order, each under its group's heading, with the same environment
variable, default, allowed values and description. Adding an option without a
row, or changing a default without the docs, fails here with the option's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tracerelay
from tracerelay.config import Option, options

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HEADER = ["Option", "Environment variable", "Default", "Allowed", "Description"]
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def render_default(value: Any) -> str:
    """A default as the Default column writes it.

    ``unset`` for None (distinct from the string ``none``, which is `none`);
    everything else in backticks: booleans as true/false, floats as Python
    writes them without a trailing ``.0``, integers (byte sizes included) in
    plain digits, text as is.
    """
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        text = repr(value)
        return f"`{text.removesuffix('.0')}`"
    return f"`{value}`"


@dataclass(frozen=True)
class Row:
    """One option row of a table, with the ``##`` heading it sits under."""

    heading: str
    line: int
    option: str
    env: str
    default: str
    allowed: str
    description: str


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(inner)]


def _code(cell: str) -> str:
    """The text of a cell that must be one code span; the raw cell if it is not."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match.group(1) if match else cell


def parse_rows(text: str) -> list[Row]:
    """The rows of every table that has the five documented columns."""
    rows: list[Row] = []
    heading = ""
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            heading = line[3:].strip()
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if cells == HEADER:
            in_table = True
            continue
        if not in_table or all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        assert len(cells) == len(HEADER), f"line {number}: expected 5 cells, got {cells!r}"
        name, env, default, allowed, description = cells
        rows.append(Row(heading, number, _code(name), _code(env), default, allowed, description))
    return rows


def problems(text: str, opts: list[Option]) -> list[str]:
    """Every disagreement between the tables in ``text`` and ``opts``, each naming its option."""
    rows = parse_rows(text)
    found: list[str] = []
    by_name = {row.option: row for row in rows}
    declared = [opt.name for opt in opts]
    for name in declared:
        if name not in by_name:
            found.append(f"{name}: option has no row in docs/configuration.md")
    for row in rows:
        if row.option not in declared:
            found.append(f"{row.option}: documented (line {row.line}) but not an option")
    documented = [row.option for row in rows if row.option in declared]
    for name in dict.fromkeys(documented):
        if documented.count(name) > 1:
            found.append(f"{name}: documented in {documented.count(name)} rows")
    present = [name for name in declared if name in by_name]
    for position, (want, got) in enumerate(zip(present, documented, strict=False)):
        if want != got:
            found.append(f"{got}: out of order at row {position + 1}, expected {want} there")
            break
    for opt in opts:
        if opt.name not in by_name:
            continue
        row = by_name[opt.name]
        where = f"{opt.name} (line {row.line})"
        if row.heading.lower() != opt.group:
            found.append(f"{where}: under heading {row.heading!r}, its group is {opt.group!r}")
        if row.env != opt.env:
            found.append(f"{where}: environment variable {row.env!r}, code says {opt.env!r}")
        if row.default != render_default(opt.default):
            found.append(
                f"{where}: default {row.default!r}, code says {render_default(opt.default)!r}"
            )
        if row.allowed != opt.allowed():
            found.append(f"{where}: allowed {row.allowed!r}, code says {opt.allowed()!r}")
        if opt.doc not in row.description:
            found.append(f"{where}: description does not contain the option's doc {opt.doc!r}")
    return found


def test_tables_match_the_options_exactly() -> None:
    found = problems(DOC.read_text(encoding="utf-8"), options())
    assert not found, "docs/configuration.md has drifted from config.py:\n" + "\n".join(found)


def test_groups_appear_in_declaration_order_one_table_each() -> None:
    groups = list(dict.fromkeys(opt.group for opt in options()))
    rows = parse_rows(DOC.read_text(encoding="utf-8"))
    headings = list(dict.fromkeys(row.heading.lower() for row in rows))
    assert headings == groups


def _row_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))


def new_problems(changed: str, opts: list[Option] | None = None) -> list[str]:
    """What ``changed`` adds to the problems of the committed file (normally none)."""
    before = set(problems(DOC.read_text(encoding="utf-8"), options()))
    return [p for p in problems(changed, options() if opts is None else opts) if p not in before]


def test_a_changed_default_is_reported_by_option_name() -> None:
    text = DOC.read_text(encoding="utf-8")
    line = _row_line(text, "batch_max_size")
    drifted = text.replace(line, line.replace("| `100` |", "| `101` |"))
    assert drifted != text
    found = new_problems(drifted)
    assert len(found) == 1
    assert found[0].startswith("batch_max_size")
    assert "default '`101`'" in found[0]


def test_an_undocumented_option_is_reported_by_name() -> None:
    text = DOC.read_text(encoding="utf-8")
    without = text.replace(_row_line(text, "keep_alive") + "\n", "")
    assert new_problems(without) == ["keep_alive: option has no row in docs/configuration.md"]
    extra = Option("new_option", "int", 3, "A new knob.", "network", lo=1, hi=9)
    assert new_problems(text, [*options(), extra]) == [
        "new_option: option has no row in docs/configuration.md"
    ]


def test_changed_range_env_and_order_are_reported() -> None:
    text = DOC.read_text(encoding="utf-8")
    line = _row_line(text, "timeout")
    changed = text.replace(line, line.replace("0.1 – 300", "0.1 – 30"))
    assert [p.split(" ")[0] for p in new_problems(changed)] == ["timeout"]

    first, second = _row_line(text, "min_batch_size"), _row_line(text, "max_batch_size")
    swapped = text.replace(first, "@@").replace(second, first).replace("@@", second)
    assert new_problems(swapped)[0].startswith("max_batch_size: out of order")

    renamed = text.replace("`TRACERELAY_SPOOL_DIR`", "`TRACERELAY_SPOOL_PATH`")
    assert [p.split(" ")[0] for p in new_problems(renamed)] == ["spool_dir"]

    twice = text.replace(line, line + "\n" + line)
    assert new_problems(twice)[0] == "timeout: documented in 2 rows"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "unset"),
        ("none", "`none`"),
        (True, "`true`"),
        (False, "`false`"),
        (5.0, "`5`"),
        (0.8, "`0.8`"),
        (100_000, "`100000`"),
        ("http://127.0.0.1:4319", "`http://127.0.0.1:4319`"),
    ],
)
def test_default_rendering_rule(value: Any, shown: str) -> None:
    assert render_default(value) == shown


def test_example_messages_are_what_the_code_prints() -> None:
    text = DOC.read_text(encoding="utf-8")
    with pytest.raises(tracerelay.ConfigError) as keyword:
        tracerelay.init(batch_max_size=5000, environ={})
    with pytest.raises(tracerelay.ConfigError) as env:
        tracerelay.Client(environ={"TRACERELAY_SAMPLE_RATE": "1.5"})
    for error in (keyword.value, env.value):
        assert f"tracerelay.errors.ConfigError: {error}\n" in text
