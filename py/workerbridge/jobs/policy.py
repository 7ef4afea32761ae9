"""Retries and recovery by error type: what happens to a job after a failed attempt.

Pure logic, the same on the page and on the host. A failure is described by its type
names, most specific first: a handler's exception crosses from the worker as its type
name and the names of its bases (``ZeroDivisionError``, ``ArithmeticError``,
``Exception``), a page-side error (a timeout, a crashed worker) by its class's MRO. The
recovery table is matched on those names in that order, so ``{ArithmeticError: ...}``
covers ``ZeroDivisionError`` unless that has a row of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from workerbridge.core.errors import InvalidInputError, InvalidTypeError


def _number(name: str, value: object, *, low: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidTypeError(f"{name} must be a finite number, not {value!r}")
    if value < low or (not inclusive and value == low):
        raise InvalidInputError(f"{name} must be {'≥' if inclusive else '>'} {low:g}, "
                                f"not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (counting from 1): ``base * factor ** (n - 1)``, at most
    ``max`` seconds. With ``jitter`` the delay is drawn between half of that and all of
    it, so jobs that failed together do not all retry at the same moment."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        _number("Backoff.base", self.base, low=0)
        _number("Backoff.factor", self.factor, low=1)
        _number("Backoff.max", self.max, low=0)
        if not isinstance(self.jitter, bool):
            raise InvalidTypeError("Backoff.jitter must be True or False")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise InvalidInputError("retries count from 1")
        # min() before the power would overflow: factor ** n grows without bound.
        exponent = min(retry - 1, 1024)
        raw = min(self.max, self.base * self.factor ** exponent) if self.factor > 1 \
            else min(self.max, self.base)
        if not self.jitter:
            return raw
        return raw / 2 + rand() * raw / 2


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a job that failed with this error, up to ``attempts`` attempts in all; wait
    ``delay`` seconds (a number, or a ``Backoff``) before each retry, or, with None, the
    job's own backoff."""

    attempts: int
    delay: float | Backoff | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidTypeError(f"Retry.attempts must be an int, not {self.attempts!r}")
        if self.attempts < 1:
            raise InvalidInputError("Retry.attempts must be at least 1 (the first run counts)")
        if self.delay is not None and not isinstance(self.delay, Backoff):
            _number("Retry.delay", self.delay, low=0)


@dataclass(frozen=True, slots=True)
class Fail:
    """End a job that failed with this error at once, whatever attempts it has left;
    ``notify``: emit a ``failed`` event that says so."""

    notify: bool = True


Rule = Retry | Fail
RecoveryKey = str | type[BaseException]


def type_names(error: BaseException | type[BaseException]) -> list[str]:
    """An exception's class and its bases, by name, most specific first."""
    cls = error if isinstance(error, type) else type(error)
    return [c.__name__ for c in cls.__mro__ if c is not object]


def recovery_table(rules: Mapping[RecoveryKey, Rule]) -> dict[str, Rule]:
    """Check a ``{exception name or class: Retry | Fail}`` table; keys become names."""
    if not isinstance(rules, Mapping):
        raise InvalidTypeError("recovery wants a mapping of exception (name or class) to "
                               "Retry(...) or Fail(...)")
    table: dict[str, Rule] = {}
    for key, rule in rules.items():
        if isinstance(key, type) and issubclass(key, BaseException):
            name = key.__name__
        elif isinstance(key, str) and key.isidentifier():
            name = key
        else:
            raise InvalidTypeError(f"recovery: {key!r} is not an exception class or name")
        if not isinstance(rule, Retry | Fail):
            raise InvalidTypeError(f"recovery: {name} maps to {rule!r}, not Retry(...) or "
                                   "Fail(...)")
        table[name] = rule
    return table


def match(names: Iterable[str], *tables: Mapping[str, Rule]) -> Rule | None:
    """The rule for a failure with these type names (most specific first): the most
    specific name any table has a row for; among tables, the first (a queue's own table
    before the global one) wins for the same name."""
    for name in names:
        for table in tables:
            rule = table.get(name)
            if rule is not None:
                return rule
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt."""

    action: Literal["retry", "fail"]
    delay: float = 0.0  # seconds before the retry is due
    notify: bool = False  # a Fail rule asked for an event
    reason: str = ""


def decide(attempt: int, attempts: int, names: Iterable[str], backoff: Backoff,
           *tables: Mapping[str, Rule], rand: Callable[[], float] = random.random) -> Decision:
    """After attempt ``attempt`` (from 1) of a job allowed ``attempts`` failed with an
    error of type ``names``: retry (after how long) or fail."""
    names = list(names)
    rule = match(names, *tables)
    kind = names[0] if names else "an error"
    if isinstance(rule, Fail):
        return Decision("fail", notify=rule.notify, reason=f"{kind}: the recovery table "
                        "says Fail")
    allowed = rule.attempts if isinstance(rule, Retry) else attempts
    if attempt >= allowed:
        return Decision("fail", reason=f"{kind}: {attempt} of {allowed} attempts used")
    if isinstance(rule, Retry) and rule.delay is not None:
        delay = rule.delay.delay(attempt, rand) if isinstance(rule.delay, Backoff) \
            else float(rule.delay)
    else:
        delay = backoff.delay(attempt, rand)
    return Decision("retry", delay=delay, reason=f"{kind}: retry {attempt} of {allowed - 1}")
