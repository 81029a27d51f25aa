"""LSN helpers: WAL positions are ints; PostgreSQL writes them as 'X/Y'.

>>> parse_lsn("16/B374D848")
97500059720
>>> format_lsn(97500059720)
'16/B374D848'
"""

from ._core import format_lsn, parse_lsn

__all__ = ["parse_lsn", "format_lsn"]
