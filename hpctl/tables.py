"""Tables of many rows as plain aligned text.

rich lays a table out cell by cell (measuring, wrapping, padding): about 15 ms a row on a busy
2-core machine, so `hpctl state list` of 1,000 jobs took 15 s. Past MANY_ROWS rows the commands
print plain columns instead, which cost microseconds a row and read the same in a terminal or a
pipe.
"""
from __future__ import annotations

from collections.abc import Sequence

MANY_ROWS = 100


def plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, a header line first."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [list(headers), *rows])
