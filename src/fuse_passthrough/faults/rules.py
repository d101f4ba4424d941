"""Fault rules: `op=write,path=/data/*.db,errno=ENOSPC` — what to inject, into which calls, and when.

A rule has three parts:
- which calls it matches: `op` (required; `a|b` for several), `path` (glob in the tracing filters' syntax,
  matched against path and path2), `comm`, `pid`, `uid` (each `a|b` for several);
- when a matching call is hit: `nth` (only the Nth match), `every` (every Nth), `after` (after N matches),
  `times` (at most N injections), `probability` (with `seed` for a reproducible sequence); all must agree;
- what happens then: `errno` (returned instead of performing the call), `delay` (slept before the real call),
  `short` (read/write: transfer at most N bytes). At least one of them.
"""

from __future__ import annotations

import errno as errno_mod
import fnmatch
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..tracing.events import ARG_NAMES

RULE_OPS = frozenset(ARG_NAMES)

KEYS = ("op", "path", "comm", "pid", "uid", "errno", "delay", "nth", "every", "after", "times", "probability",
        "seed", "short")
SHORT_OPS = frozenset({"read", "write"})
# Errors the kernel ignores, or calls with no caller to return them to: an injected errno would only leak what
# the call holds (release closes the source's file). Delays are allowed.
NO_ERRNO_OPS = frozenset({"release", "releasedir", "init", "destroy", "forget", "forget_multi"})
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s)$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class RuleError(ValueError):
    """A rule that cannot be used; the message is one line, meant for the user."""


def parse_errno(text: str) -> int:
    """'ENOSPC' or '28' -> 28."""
    if text.isdigit():
        value = int(text)
        if value <= 0 or value >= 4096:
            raise RuleError(f"errno out of range: {text}")
        return value
    named = getattr(errno_mod, text.upper(), None)
    if not text.upper().startswith("E") or not isinstance(named, int):
        raise RuleError(f"unknown errno {text!r} (a name such as ENOSPC or EIO, or a number)")
    return named


def parse_duration(text: str) -> int:
    """'50ms', '1.5s', '200us' -> nanoseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise RuleError(f"malformed duration {text!r} (a number with a unit: ns, us, ms or s, e.g. 50ms)")
    return round(float(m.group(1)) * _UNIT_NS[m.group(2)])


def _count(key: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RuleError(f"{key} must be an integer, not {text!r}") from None
    if value < minimum:
        raise RuleError(f"{key} must be >= {minimum}, not {value}")
    return value


def _alternatives(text: str) -> list[str]:
    values = [v for v in text.split("|") if v]
    if not values:
        raise RuleError("empty value")
    return values


@dataclass(eq=False)
class FaultRule:
    """One parsed rule. `text` is what the user wrote; counters live on the rule (thread-safe)."""

    text: str
    ops: frozenset[str]
    path: str | None = None
    comms: frozenset[str] = frozenset()
    pids: frozenset[int] = frozenset()
    uids: frozenset[int] = frozenset()
    errno: int = 0
    delay_ns: int = 0
    short: int | None = None
    nth: int | None = None
    every: int | None = None
    after: int = 0
    times: int | None = None
    probability: float | None = None
    seed: int | None = None
    _path_match: Callable[[str], Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)
    matched: int = 0  # calls that matched op/path/comm/pid/uid
    injected: int = 0  # calls it acted on

    def __post_init__(self) -> None:
        if self.path is not None:
            self._path_match = re.compile(fnmatch.translate(self.path)).match
        self._random.seed(self.seed)

    @property
    def needs_caller(self) -> bool:
        return bool(self.comms or self.pids or self.uids)

    def matches_paths(self, path: str | None, path2: str | None) -> bool:
        """path= against a call's two paths (the inode core's calls carry them; None: unknown)."""
        match = self._path_match
        if match is None:
            return True
        return (path is not None and match(path) is not None) or (path2 is not None and match(path2) is not None)

    def matches_caller(self, pid: int, uid: int, comm: str | None) -> bool:
        if self.pids and pid not in self.pids:
            return False
        if self.uids and uid not in self.uids:
            return False
        return not self.comms or comm in self.comms

    def fires(self) -> bool:
        """Count one matching call; True when the rule acts on it (nth/every/after/times/probability)."""
        with self._lock:
            self.matched += 1
            n = self.matched
            if self.nth is not None and n != self.nth:
                return False
            if self.every is not None and n % self.every:
                return False
            if n <= self.after:
                return False
            if self.times is not None and self.injected >= self.times:
                return False
            # Drawn only for calls that got this far, so a seed gives the same sequence for the same calls.
            if self.probability is not None and self._random.random() >= self.probability:
                return False
            self.injected += 1
            return True


def parse_rule(text: str) -> FaultRule:
    """Parse `key=value,key=value...`; raises RuleError with a one-line reason."""
    values: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise RuleError(f"{item!r} is not key=value (keys: {', '.join(KEYS)})")
        if key not in KEYS:
            raise RuleError(f"unknown key {key!r} (keys: {', '.join(KEYS)})")
        if key in values:
            raise RuleError(f"{key} given twice")
        values[key] = value.strip()
    if "op" not in values:
        raise RuleError("op=... is required (e.g. op=write or op=read|write)")
    ops = frozenset(_alternatives(values["op"]))
    unknown = sorted(ops - RULE_OPS)
    if unknown:
        raise RuleError(f"unknown op {', '.join(unknown)} (known: {', '.join(sorted(RULE_OPS))})")
    kw: dict[str, Any] = {}
    if "path" in values:
        kw["path"] = values["path"]
    if "comm" in values:
        kw["comms"] = frozenset(_alternatives(values["comm"]))
    if "pid" in values:
        kw["pids"] = frozenset(_count("pid", v, 0) for v in _alternatives(values["pid"]))
    if "uid" in values:
        kw["uids"] = frozenset(_count("uid", v, 0) for v in _alternatives(values["uid"]))
    if "errno" in values:
        kw["errno"] = parse_errno(values["errno"])
        refused = sorted(ops & NO_ERRNO_OPS)
        if refused:
            raise RuleError(f"errno cannot be injected into {', '.join(refused)}: the kernel ignores its result "
                            f"(inject into flush to fail close(2); delay is allowed)")
    if "delay" in values:
        kw["delay_ns"] = parse_duration(values["delay"])
    if "short" in values:
        kw["short"] = _count("short", values["short"], 1)
        if not ops <= SHORT_OPS:
            raise RuleError("short applies to read and write only")
    if not (kw.get("errno") or kw.get("delay_ns") or "short" in kw):
        raise RuleError("a rule needs errno=, delay= or short= (what to inject)")
    if kw.get("errno") and "short" in kw:
        raise RuleError("errno and short exclude each other (a call either fails or transfers less)")
    for key, minimum in (("nth", 1), ("every", 1), ("after", 0), ("times", 1)):
        if key in values:
            kw[key] = _count(key, values[key], minimum)
    if "probability" in values:
        try:
            p = float(values["probability"])
        except ValueError:
            raise RuleError(f"probability must be a number in [0, 1], not {values['probability']!r}") from None
        if not 0.0 <= p <= 1.0:
            raise RuleError(f"probability must be in [0, 1], not {values['probability']}")
        kw["probability"] = p
    if "seed" in values:
        if "probability" not in values:
            raise RuleError("seed is for probability=")
        kw["seed"] = _count("seed", values["seed"], 0)
    return FaultRule(text=",".join(f"{k}={v}" for k, v in values.items()), ops=ops, **kw)


def parse_rules_file(text: str, name: str) -> list[FaultRule]:
    """One rule per line; blank lines and lines starting with `#` ignored. Errors name the file and line."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rules.append(parse_rule(line))
        except RuleError as e:
            raise RuleError(f"{name}:{number}: {e}") from None
    return rules
