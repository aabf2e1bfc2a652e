"""Parameter types that refuse, in one line, the values click alone lets through.

``click.Path`` stats a name with a NUL in it (``ValueError: embedded null byte``, a
traceback); ``click.FloatRange`` takes ``inf``, ``nan`` and ``1e400`` (which a float reads as
``inf``), which then meet an engine's timers as an ``OverflowError`` or a ``KeyError``; an
``IntRange`` without a top takes ``--retries 10000000000``. These types keep click's own checks
and words for everything else (``-1 is not in the range x>=0``) and add the missing ones.
"""

from __future__ import annotations

import math
import os
from typing import Any

import click


class SafePath(click.Path):
    """``click.Path`` that refuses a NUL character in one line (``os.stat`` would raise
    ``ValueError: embedded null byte``, a traceback) and an empty name."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
        if "\x00" in text:
            self.fail(f"{text!r} holds a NUL character: not a file name", param, ctx)
        if not text.strip():
            self.fail("is empty: give a file or folder name", param, ctx)
        return super().convert(value, param, ctx)


class Finite(click.FloatRange):
    """A finite number from ``min`` up to ``most``: ``inf``, ``nan`` and ``1e400`` (which a
    float reads as ``inf``) are refused in one line, as is an absurdly large value, before an
    engine meets them (as an ``OverflowError`` or a ``KeyError`` deep in its timers)."""

    def __init__(self, min: float, most: float, unit: str = "seconds") -> None:
        super().__init__(min=min)
        self.most, self.unit = most, unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of {self.unit}", param, ctx)
        number = super().convert(number, param, ctx)
        if number > self.most:
            self.fail(f"{number:g} is more than {self.most:g} {self.unit}", param, ctx)
        return number


class Bounded(click.IntRange):
    """An integer from ``min`` up to a sane ``most`` (``--retries 10000000000`` is a typo)."""

    def __init__(self, min: int, most: int) -> None:
        super().__init__(min=min)
        self.most = most

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = super().convert(value, param, ctx)
        if number > self.most:
            self.fail(f"{number} is more than {self.most}, the most this option takes", param, ctx)
        return number
