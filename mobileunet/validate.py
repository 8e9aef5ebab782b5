"""Argument checks the library's constructors and configs share, each raising a ``ValueError`` that names the value.

Example:
    >>> whole_number("steps", 3)
    3
    >>> whole_number("steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: steps=0: must be a whole number from 1 up
"""
from __future__ import annotations


def is_whole(value) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is an int to Python, never a count to the course)."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(name: str, value, low: int = 1, high: int | None = None, fix: str = "") -> int:
    """``value`` if it is a whole number in ``low..high``; else a ``ValueError`` naming ``name`` (and ``fix``)."""
    if not is_whole(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"from {low} up"
        raise ValueError(f"{name}={value!r}: must be a whole number {span}" + (f"; {fix}" if fix else ""))
    return value
