"""One metadata row per window, with the default collector's columns and omission rules.

Columns, in order: ``timeline``, ``batch_idx``, ``dataloader_idx``, then ``subject_id``
only if every batch exposed ``batch.data["subject_id"]``, then ``group`` only if every
window's trigger had one: ``trigger.<group_field>``, else ``.category``, else
``.filepath`` (a missing trigger, ``None`` or NaN counts as none).
"""

from __future__ import annotations

import math
import operator
import os
import typing as tp

if tp.TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["WindowMetadata", "group_of"]

_FALLBACK_FIELDS = ("category", "filepath")
_TIMELINE = operator.attrgetter("timeline")


def _field(obj: tp.Any, name: str) -> tp.Any:
    if isinstance(obj, dict):
        value = obj.get(name)
    else:
        value = getattr(obj, name, None)
        if value is None and isinstance(obj, tp.Mapping):
            value = obj.get(name)
    if type(value) is str:  # the common case, decided without the slower checks below
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def group_of(segment: tp.Any, group_field: str) -> tp.Any:
    """The retrieval group of a window, or ``None`` when its trigger names none."""
    trigger = getattr(segment, "trigger", None)
    if trigger is None:
        return None
    value = _field(trigger, group_field)
    if value is not None:
        return value
    for name in _FALLBACK_FIELDS:
        value = _field(trigger, name)
        if value is not None:
            return value
    return None


def _groups_of(segments: tp.Sequence[tp.Any], group_field: str) -> tuple[list[tp.Any], bool]:
    """``group_of`` for every segment, and whether every one has a group.

    In C (attrgetter) when every trigger has a str field.

    Why: this runs for every window of every batch; the per-window Python calls cost about
    0.3 us each, the C path under 0.05 us. Anything else (a missing trigger or field, None,
    NaN, a path, a dict trigger) takes the general path, so the result is the same.
    """
    try:
        values = list(map(operator.attrgetter(f"trigger.{group_field}"), segments))
    except AttributeError:
        values = None
    if values is not None and set(map(type, values)) <= {str}:
        return values, True
    values = [group_of(s, group_field) for s in segments]
    return values, all(v is not None for v in values)


def _as_list(values: tp.Any) -> list[tp.Any]:
    if hasattr(values, "tolist"):  # torch tensors and numpy arrays
        values = values.tolist()
    return list(values) if isinstance(values, list | tuple) else [values]


def _one_type(values: list[tp.Any]) -> list[tp.Any]:
    """Values of one type as they are; mixed types (``"a"`` and ``1``) as strings, since a
    typed table column holds one type."""
    if len({type(v) for v in values}) <= 1:
        return values
    return [str(v) for v in values]


# Rows converted to Arrow at a time while the writer is idle: large enough that a chunk's
# fixed cost is small, small enough that the conversion fits between two batches.
SEAL_ROWS = 16_384
_OPTIONAL = ("subject_id", "group")
_PYTHON_COLUMNS = ("timeline", *_OPTIONAL)  # the columns whose values may be any object
_COLUMNS = ("timeline", "batch_idx", "dataloader_idx", *_OPTIONAL)  # in table order
# The plain Python types whose Arrow type is the one pandas would give their column.
_ARROW_TYPE_NAMES = {str: "string", int: "int64", float: "float64", bool: "bool_"}


def _arrow_column(values: list[tp.Any]) -> pa.Array | None:
    """``values`` as one typed Arrow array when they share one plain type, else ``None``.

    ``None`` sends the whole table down pandas' path, which owns the rules for anything
    else (mixed types become strings, objects stay objects).
    """
    import pyarrow as pa

    kinds = set(map(type, values))
    type_name = _ARROW_TYPE_NAMES.get(kinds.pop()) if len(kinds) == 1 else None
    if type_name is None:
        return None
    try:
        return pa.array(values, type=getattr(pa, type_name)(), from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


class WindowMetadata:
    """Accumulates metadata columns batch by batch (on the writer thread).

    ``seal`` turns the rows added so far into Arrow columns while the writer waits for the
    next batch, so the end of the epoch only converts the last few rows: building the
    table from Python lists costs about 0.3 us a window, paid inside the test loop's idle
    time instead of after it.
    """

    def __init__(self, group_field: str = "text") -> None:
        self.group_field = group_field
        # Rows [sealed_rows, len(self)) as Python values; the sealed rows live in _chunks.
        self.timeline: list[tp.Any] = []
        self.batch_idx: list[int] = []
        self.dataloader_idx: list[int] = []
        self.subject_id: list[tp.Any] = []
        self.group: list[tp.Any] = []
        self.every_batch_has_subject = True
        self.every_window_has_group = True
        # Arrow columns of rows [0, sealed_rows), or None once a chunk had no plain type.
        self._chunks: list[dict[str, pa.Array]] | None = []
        self.sealed_rows = 0

    def __len__(self) -> int:
        return self.sealed_rows + len(self.timeline)

    def add(
        self,
        segments: tp.Sequence[tp.Any],
        subject_ids: tp.Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Record the windows of one batch; ``subject_ids`` is ``None`` when it had none."""
        n = len(segments)
        subjects: list[tp.Any] = []
        if subject_ids is None:
            self.every_batch_has_subject = False
        elif self.every_batch_has_subject:
            subjects = _as_list(subject_ids)
            if len(subjects) != n:
                raise ValueError(
                    f"batch.data['subject_id'] has {len(subjects)} values for {n} segments; "
                    "it needs one subject id per window"
                )
        groups: list[tp.Any] = []
        if self.every_window_has_group:
            groups, complete = _groups_of(segments, self.group_field)
            if not complete:
                self.every_window_has_group = False
                self.group = []
        self.timeline.extend(map(_TIMELINE, segments))
        self.batch_idx.extend([batch_idx] * n)
        self.dataloader_idx.extend([dataloader_idx] * n)
        if self.every_batch_has_subject:
            self.subject_id.extend(subjects)
        else:
            self.subject_id = []
        if self.every_window_has_group:
            self.group.extend(groups)

    def seal(self, min_rows: int | None = None) -> None:
        """Convert the rows added since the last seal to Arrow, if there are ``min_rows``
        (default ``SEAL_ROWS``), and let go of their Python values.

        Why let go: a window's values are Python objects (often strings made per window);
        freeing a whole epoch's worth at its end cost ~4 ms per 128k windows there.
        """
        n = len(self.timeline)
        min_rows = SEAL_ROWS if min_rows is None else max(min_rows, 1)
        if self._chunks is None or n < min_rows:
            return
        import numpy as np
        import pyarrow as pa

        chunk: dict[str, pa.Array] = {
            "batch_idx": pa.array(np.asarray(self.batch_idx, dtype=np.int64)),
            "dataloader_idx": pa.array(np.asarray(self.dataloader_idx, dtype=np.int64)),
        }
        for name in _PYTHON_COLUMNS:
            if name in _OPTIONAL and not self._has(name):
                continue
            column = _arrow_column(getattr(self, name))
            previous = self._chunks[0].get(name) if self._chunks else None
            if column is None or (previous is not None and previous.type != column.type):
                self._unseal()
                self._chunks = None  # not one plain type: pandas builds the table at the end
                return
            chunk[name] = column
        self._chunks.append(chunk)
        self.sealed_rows += n
        for name in _COLUMNS:
            getattr(self, name).clear()

    def _unseal(self) -> None:
        """Put the sealed rows back in front of the Python lists (for pandas' path).

        Floats come back through numpy, so a NaN (stored as an Arrow null) is NaN again.
        """
        if not self._chunks:
            return
        for name in _COLUMNS:
            if name in _OPTIONAL and not self._has(name):
                continue
            sealed = [
                value
                for chunk in self._chunks
                for value in chunk[name].to_numpy(zero_copy_only=False).tolist()
            ]
            setattr(self, name, sealed + getattr(self, name))
        self._chunks = []
        self.sealed_rows = 0

    def to_table(self, n_rows: int | None = None) -> pa.Table:
        """The table as Arrow, optionally cut to its first ``n_rows`` rows.

        From the sealed chunks when every column kept one plain type (the same table
        pandas would build, in a fraction of the time); otherwise through ``to_frame``.
        """
        import pyarrow as pa

        self.seal(min_rows=1)
        if self._chunks is None or not self._chunks:
            return pa.Table.from_pandas(self.to_frame(n_rows), preserve_index=False)
        names = [name for name in _COLUMNS if name not in _OPTIONAL or self._has(name)]
        columns = {name: pa.chunked_array([c[name] for c in self._chunks]) for name in names}
        table = pa.table(columns)
        return table if n_rows is None else table.slice(0, n_rows)

    def _has(self, optional_column: str) -> bool:
        """Whether the optional column is still kept (every batch or window so far had it)."""
        if optional_column == "subject_id":
            return self.every_batch_has_subject
        return self.every_window_has_group

    def to_frame(self, n_rows: int | None = None) -> pd.DataFrame:
        """The table, optionally cut to its first ``n_rows`` rows."""
        import numpy as np
        import pandas as pd

        self._unseal()
        columns: dict[str, tp.Any] = {
            "timeline": _one_type(self.timeline),
            "batch_idx": np.asarray(self.batch_idx, dtype=np.int64),
            "dataloader_idx": np.asarray(self.dataloader_idx, dtype=np.int64),
        }
        if self.every_batch_has_subject and self.timeline:
            columns["subject_id"] = _one_type(self.subject_id)
        if self.every_window_has_group and self.timeline:
            columns["group"] = _one_type(self.group)
        frame = pd.DataFrame(columns)
        return frame if n_rows is None else frame.iloc[:n_rows].reset_index(drop=True)
