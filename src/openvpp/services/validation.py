"""Vectorised validation of tabular input against the column specs of ``model.columns``.

Every row is checked, every broken rule is counted, and the first violations
are reported with their file line, field and rule. Callers write nothing unless
the whole table is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.columns import Column

FLOAT_RE = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
INT_RE = r"^\s*[+-]?\d+\s*$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
MAX_REPORTED = 1000
#: line number of the first data row in a CSV with a header line
FIRST_DATA_LINE = 2


@dataclass
class Checked:
    """A validated table with typed columns (float64, int64, string, date32).

    ``rewritten`` names the columns where a present value of the input is not stored as it reads:
    text trimmed of surrounding blanks, or a blank text turned into "missing". PostgreSQL's
    ``COPY ... (FORMAT csv)`` of the same file keeps such text as it is (and refuses a blank
    number), so a bulk load may copy the file's own bytes only when no column is rewritten.
    Missing input values (nulls: an unquoted empty CSV field read with ``csv_nulls``) are not
    rewrites; COPY reads those as NULL too.
    """

    table: pa.Table
    n_rows: int
    rewritten: tuple[str, ...] = ()


class _Collector:
    def __init__(self, first_line: int):
        self.first_line = first_line
        self.violations: list[Violation] = []
        self.total = 0

    def add(self, bad: np.ndarray, col: str, rule: str, values: pa.Array | None) -> None:
        idx = np.flatnonzero(bad)
        if idx.size == 0:
            return
        self.total += int(idx.size)
        room = MAX_REPORTED - len(self.violations)
        for i in idx[: max(room, 0)]:
            v = values[int(i)].as_py() if values is not None else None
            self.violations.append(Violation(col, rule, v, line=int(i) + self.first_line))


def _mask(arr: pa.Array) -> np.ndarray:
    """Boolean array → numpy bool with nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _as_strings(arr: pa.ChunkedArray) -> pa.Array:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return arr


def _blank(arr: pa.Array) -> np.ndarray:
    s = _as_strings(arr)
    return _mask(pc.or_kleene(pc.is_null(s), pc.equal(pc.utf8_trim_whitespace(s), "")))


class _Dict:
    """A text column dictionary-encoded once: rules run on the distinct values, then map back to rows.

    Ids of operators, sites, transformer areas and enums repeat a lot; a million rows often hold a few
    thousand distinct values, so checking each distinct value once is what makes validation fast.
    """

    def __init__(self, raw: pa.Array):
        enc = pc.dictionary_encode(_as_strings(raw))
        self.values: pa.Array = enc.dictionary
        idx = enc.indices
        self.null_rows = np.asarray(pc.is_null(idx).to_numpy(zero_copy_only=False), dtype=bool)
        self.idx = np.where(self.null_rows, 0, idx.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)
        trimmed = pc.utf8_trim_whitespace(self.values)
        self.clean = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)

    def rows(self, per_value: np.ndarray) -> np.ndarray:
        """Row mask from a mask over the distinct values (null rows: False)."""
        if len(per_value) == 0:
            return np.zeros(len(self.idx), dtype=bool)
        return np.where(self.null_rows, False, per_value[self.idx])

    def take(self, per_value: pa.Array) -> pa.Array:
        """Row values from one value per distinct value (null rows stay null)."""
        return pc.take(per_value, pa.array(self.idx, mask=self.null_rows))

    @property
    def blank(self) -> np.ndarray:
        return self.null_rows | self.rows(_mask(pc.is_null(self.clean)))


def _present_blank(raw: pa.Array, blank: np.ndarray) -> bool:
    """Any value that is there but blank (an empty quoted field, or only spaces)?"""
    return bool((blank & ~_mask(pc.is_null(raw))).any())


def _typed(col: Column, raw: pa.Array, out: _Collector) -> tuple[pa.Array, np.ndarray, bool]:
    """Parse ``raw`` to the column's type: (values, blank rows, every present value kept as it reads,
    see ``Checked.rewritten``). Unparsable non-blank values are violations and become null."""
    kind = col.kind
    numeric = kind in ("float", "int")
    if numeric and (pa.types.is_floating(raw.type) or pa.types.is_integer(raw.type)):
        target = pa.float64() if kind == "float" else pa.int64()
        blank = _mask(pc.is_null(raw))
        values = pc.cast(raw, target, safe=False)
        if pa.types.is_floating(raw.type):
            if kind == "int":
                out.add(_mask(pc.not_equal(raw, pc.floor(raw))), col.name, "must be a whole number", raw)
            out.add(_mask(pc.invert(pc.is_finite(raw))) & ~blank, col.name, "must be a finite number", raw)
            values = pc.if_else(pc.is_finite(raw), values, pa.scalar(None, target))
        return values, blank, True
    if kind == "date" and (pa.types.is_date(raw.type) or pa.types.is_timestamp(raw.type)):
        return pc.cast(raw, pa.date32()), _mask(pc.is_null(raw)), True
    if numeric:
        return _parse_numbers(col, raw, out)
    if kind == "str" and not col.pattern and not col.unique:
        values, blank, verbatim = _free_text(raw)
        if col.max_len is not None:
            long = _mask(pc.greater(pc.utf8_length(values), col.max_len))
            out.add(long & ~blank, col.name, f"must be at most {col.max_len} characters", raw)
        return values, blank, verbatim
    d = _Dict(raw)
    blank = d.blank
    # the distinct present values, each as the rules read it: all unchanged → the column is verbatim
    verbatim = bool(pc.all(pc.equal(d.clean, d.values), skip_nulls=False, min_count=0).as_py())
    if kind == "date":
        shaped = _mask(pc.match_substring_regex(d.clean, DATE_RE))
        clean = pc.if_else(pa.array(shaped), d.clean, pa.scalar(None, pa.string()))
        parsed = pc.strptime(clean, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls impossible days over (2024-02-30 → 03-01): a real date prints back unchanged
        same = _mask(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), clean))
        out.add(d.rows(~same) & ~blank, col.name, "must be a date YYYY-MM-DD", raw)
        return d.take(pc.cast(parsed, pa.date32())), blank, verbatim
    if kind == "enum":
        ok = _mask(pc.is_in(d.clean, value_set=pa.array(col.choices)))
        out.add(d.rows(~ok) & ~blank, col.name, f"must be one of {', '.join(col.choices)}", raw)
    if col.pattern:
        ok = _mask(pc.match_substring_regex(d.clean, col.pattern))
        out.add(d.rows(~ok) & ~blank, col.name, f"must match {col.pattern}", raw)
    if col.unique:
        # every occurrence of a distinct value after its first is a duplicate
        first = np.full(len(d.values), -1, dtype=np.int64)
        order = np.arange(len(d.idx))[::-1]
        first[d.idx[order]] = order
        dup = (first[d.idx] != np.arange(len(d.idx))) & ~d.null_rows
        out.add(dup & ~blank, col.name, "must be unique in the file", raw)
    if verbatim:
        return _as_strings(raw), blank, True   # nothing to trim or blank out: keep the column as it is
    return d.take(d.clean), blank, False


def _free_text(raw: pa.Array) -> tuple[pa.Array, np.ndarray, bool]:
    """A text column with no rule but 'present' (names, descriptions): trimmed, blank → null, row by
    row. Most values are distinct here, so dictionary-encoding them first would cost more than it saves."""
    s = _as_strings(raw)
    trimmed = pc.utf8_trim_whitespace(s)
    blank = _mask(pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")))
    verbatim = not _present_blank(s, blank) and pc.all(pc.equal(trimmed, s), min_count=0).as_py()
    if verbatim and not blank.any():
        return s, blank, True
    return pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), trimmed), blank, verbatim


def _parse_numbers(col: Column, raw: pa.Array, out: _Collector) -> tuple[pa.Array, np.ndarray, bool]:
    """Text → numbers: Arrow's cast parses the whole column in C++; only when it refuses a value do
    we look for which rows are bad (regex), so the common, valid case costs one cast. Surrounding
    blanks are no rewrite here (PostgreSQL's number input skips them too); a blank present value is."""
    target = pa.float64() if col.kind == "float" else pa.int64()
    s = _as_strings(raw)
    trimmed = pc.utf8_trim_whitespace(s)
    blank = _mask(pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")))
    clean = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), trimmed)
    verbatim = not _present_blank(s, blank)
    try:
        values = pc.cast(clean, target)
        if col.kind == "float":
            finite = _mask(pc.is_finite(values))
            out.add(~finite & ~blank, col.name, "must be a finite number", s)
            values = pc.if_else(pa.array(finite), values, pa.scalar(None, target))
        return values, blank, verbatim
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = _mask(pc.match_substring_regex(clean, FLOAT_RE if col.kind == "float" else INT_RE))
    out.add(~ok & ~blank, col.name, "must be a number" if col.kind == "float" else "must be a whole number", s)
    return pc.cast(pc.if_else(pa.array(ok), clean, pa.scalar(None, pa.string())), target), blank, verbatim


def validate_table(table: pa.Table, columns: tuple[Column, ...], first_line: int = FIRST_DATA_LINE) -> Checked:
    """Check every row of ``table`` against ``columns``; raise ``InvalidInput`` naming line, field, rule.

    Returns the table with exactly the spec's columns, typed. Numbers arrive as text (CSV) or typed
    (Parquet). Line numbers count the header as line 1.
    """
    out = _Collector(first_line)
    spec_names = [c.name for c in columns]
    missing = [c.name for c in columns if c.required and c.name not in table.column_names]
    for name in missing:
        out.violations.append(Violation(name, "required column is missing", None, line=1))
        out.total += 1
    for name in table.column_names:
        if name not in spec_names:
            out.violations.append(Violation(name, "unknown column", None, line=1))
            out.total += 1
    if out.total:
        raise InvalidInput(out.violations, out.total)

    n = table.num_rows
    typed: dict[str, pa.Array] = {}
    rewritten: list[str] = []
    for col in columns:
        if col.name not in table.column_names:
            typed[col.name] = pa.nulls(n, _arrow_type(col))
            continue
        raw = table.column(col.name).combine_chunks()
        values, blank, verbatim = _typed(col, raw, out)
        if not verbatim:
            rewritten.append(col.name)
        if col.required:
            out.add(blank, col.name, "is required", None)
        typed[col.name] = values
        if col.kind in ("float", "int"):
            present = ~blank
            if col.min is not None:
                below = pc.less_equal(values, col.min) if col.min_exclusive else pc.less(values, col.min)
                rule = f"must be {'>' if col.min_exclusive else '>='} {col.min:g}"
                out.add(present & _mask(below), col.name, rule, values)
            if col.max is not None:
                out.add(present & _mask(pc.greater(values, col.max)), col.name, f"must be <= {col.max:g}", values)
    for col in columns:
        if col.max_of:
            over = _mask(pc.greater(typed[col.name], typed[col.max_of]))
            out.add(over, col.name, f"must not exceed {col.max_of}", typed[col.name])
    if out.total:
        out.violations.sort(key=lambda v: (v.line or 0, spec_names.index(v.field) if v.field in spec_names else 0))
        raise InvalidInput(out.violations, out.total)
    return Checked(pa.table(typed), n, tuple(rewritten))


def _arrow_type(col: Column) -> pa.DataType:
    return {"float": pa.float64(), "int": pa.int64(), "date": pa.date32()}.get(col.kind, pa.string())


def not_in(values: pa.Array, allowed: pa.Array | list) -> np.ndarray:
    """True where a present value is not in ``allowed``."""
    present = ~_mask(pc.is_null(values))
    return present & ~_mask(pc.is_in(values, value_set=pa.array(allowed, type=values.type)))


def report(out_violations: list[Violation], bad: np.ndarray, field: str, rule: str, values: pa.Array,
           first_line: int = FIRST_DATA_LINE) -> int:
    """Append violations for rows where ``bad``; return how many rows broke the rule."""
    c = _Collector(first_line)
    c.violations = out_violations
    c.add(bad, field, rule, values)
    return c.total
