"""Event renderings: `text` (one readable line, the original example's call notation) and `jsonl`."""

from __future__ import annotations

import errno as errno_mod
import functools
import json
import shlex
from collections.abc import Callable
from typing import Any

import orjson

from .events import (
    ARG_NAMES,
    DATA_ARGS,
    DECODED_ARGS,
    KERNEL_COMM,
    RESULT_FORMS,
    SCHEMA_VERSION,
    decode_arg,
    decode_result,
)

try:
    from ._jsonl import ascii_escaped as _ascii_escaped
    from ._jsonl import encode_events as _encode_events
    from ._jsonl import encode_text_events as _encode_text_events
except ImportError:  # built without a C compiler (setup.py)
    _ascii_escaped = None  # type: ignore[assignment]
    _encode_events = None  # type: ignore[assignment]
    _encode_text_events = None  # type: ignore[assignment]

FORMATS = ("text", "jsonl")

_BARE = {"flags", "mode", "mask", "whence", "dev"}  # already rendered as names or octal: no quotes


def _value(op: str, name: str, value: Any) -> str:
    if value is None:
        return "None"
    if name in _BARE and isinstance(value, str):
        return value
    if name == "size" and op in DATA_ARGS:
        return f"<{value} bytes>"  # the data itself is never recorded
    if name == "times" and isinstance(value, list):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return repr(value)


def _result(event: dict[str, Any]) -> str:
    if event["errno"]:
        return f"-> {event['errno']}"
    r = event["result"]
    if isinstance(r, dict):
        if "fh" in r and len(r) == 1:
            return f"= fh {r['fh']}"
        if "passthrough" in r:
            return f"= fh {r['fh']} [kernel passthrough, backing {r['passthrough']}: read/write not traced]"
        return "= {" + " ".join(f"{k}={v}" for k, v in r.items()) + "}"
    return f"= {r!r}"


def format_text(event: dict[str, Any]) -> str:
    op = event["op"]
    parts = []
    args = event["args"]
    for name in ARG_NAMES.get(op, ()):
        if name == "path":
            parts.append(repr(event["path"]))
        elif name == "path2":
            parts.append(repr(event["path2"]))
        elif name in args:
            parts.append(_value(op, name, args[name]))
    pid = event["pid"]
    who = KERNEL_COMM if pid == 0 else f"{event['comm'] or '?'}[{pid}]"
    cmdline = event.get("cmdline")  # --cmdline: the command line, quoted as a shell would take it
    command = f"  $ {shlex.join(cmdline)}" if cmdline else ""
    return (f"{op}({', '.join(parts)}) {_result(event)}{_injected(event)}   {event['duration_ns'] / 1e6:.3f} ms  "
            f"{who} uid={event['uid']} gid={event['gid']}{command}\n")


def _injected(event: dict[str, Any]) -> str:
    """A marker no one can miss: this result was made up by a fault rule, not returned by SOURCE."""
    injected = event.get("injected")
    if injected is None:
        return ""
    parts = ["INJECTED"]  # an injected errno is the result shown just before
    if injected == "short":
        parts.append("short")
    delay = event.get("delay_ns")
    if delay:
        parts.append(f"delay {delay / 1e6:g} ms")
    return f"  <<{' '.join(parts)}>>"


# One encoder for all events (json.dumps with separators= builds a new one per call). ASCII escapes keep file
# names that are not UTF-8 (surrogate escapes) valid, round-trippable JSON.
_JSON = json.JSONEncoder(separators=(",", ":"))


def format_jsonl(event: dict[str, Any]) -> str:
    return _JSON.encode(event) + "\n"


def format_jsonl_bytes(event: dict[str, Any]) -> bytes:
    """`format_jsonl(event)` as bytes, the same bytes, about 10x faster (the trace writer's main cost).

    orjson writes exactly what the stdlib encoder writes for pure-ASCII events (floats too: an event's only
    float is `ts`, epoch seconds, printed alike by both); names that are not ASCII, which orjson writes as raw
    UTF-8, are escaped as the stdlib does by _jsonl.c (without it, and for names holding surrogate escapes, which
    orjson refuses, the stdlib encoder writes the line), so the output does not depend on which encoder wrote it.
    """
    try:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # surrogates, or an int beyond 64 bits
        return format_jsonl(event).encode("ascii")
    if line.isascii() and b"\x7f" not in line:  # the stdlib escapes DEL too
        return line
    return format_jsonl(event).encode("ascii") if _ascii_escaped is None else _ascii_escaped(line)


def formatter(name: str) -> Callable[[dict[str, Any]], str]:
    if name == "text":
        return format_text
    if name == "jsonl":
        return format_jsonl
    raise ValueError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})")


def encoder(name: str) -> Callable[[dict[str, Any]], bytes]:
    """Like `formatter`, but to the bytes written to a trace file."""
    if name == "jsonl":
        return format_jsonl_bytes
    fmt = formatter(name)

    def encode(event: dict[str, Any]) -> bytes:
        return fmt(event).encode("utf-8", "backslashreplace")

    return encode


# For the compiled writer (_jsonl.c encode_events), what events.event_of knows, per operation: each argument's JSON
# key, kind (_ARG_*), decoder and cache of decoded values; how the result is written (_RESULT_*) and with what.
_ARG_PLAIN, _ARG_PATH, _ARG_PATH2, _ARG_DECODED = range(4)
_RESULT_PLAIN, _RESULT_STAT, _RESULT_FH, _RESULT_WRAPPED, _RESULT_DECODED = range(5)
_UNCACHED = frozenset({"times"})  # values too varied to be worth remembering


def _plan(op: str, names: tuple[str, ...]) -> tuple[Any, ...]:
    args = []
    for name in names:
        kind = (_ARG_PATH if name == "path" else _ARG_PATH2 if name == "path2" else
                _ARG_DECODED if name in DECODED_ARGS else _ARG_PLAIN)
        decoder = functools.partial(decode_arg, op, name) if kind == _ARG_DECODED else None
        cache: dict[Any, Any] | None = {} if kind == _ARG_DECODED and name not in _UNCACHED else None
        args.append((_JSON.encode(name).encode() + b":", kind, decoder, cache))
    form = RESULT_FORMS.get(op)
    result: tuple[int, Any]
    if form is None:
        result = (_RESULT_PLAIN, None)
    elif form in ("entries", "size"):
        result = (_RESULT_WRAPPED, b"{" + _JSON.encode(form).encode() + b":")
    else:
        kind = {"stat": _RESULT_STAT, "fh": _RESULT_FH}.get(form, _RESULT_DECODED)
        result = (kind, functools.partial(decode_result, op))
    return (tuple(args), *result)


_PLANS = {op: _plan(op, names) for op, names in ARG_NAMES.items()}
_HEAD = b'{"v":' + str(SCHEMA_VERSION).encode() + b',"seq":'
_ERRNO_NAMES = dict(errno_mod.errorcode)  # events.errno_name's


# The same for the text lines (_jsonl.c encode_text_events): per argument its kind (_TEXT_*), its text as _value
# writes it (for a value the C module does not write itself) and a cache of those texts for decoded values; how
# the result is written (_TEXT_RESULT_*) and, for a wrapped one, its start.
_TEXT_PATH, _TEXT_DATA, _TEXT_VALUE = range(3)
_TEXT_RESULT_PLAIN, _TEXT_RESULT_STAT, _TEXT_RESULT_FH, _TEXT_RESULT_WRAPPED, _TEXT_RESULT_OTHER = range(5)


def _text_of(op: str, name: str, value: Any) -> bytes:
    decoded = value if value is None or name not in DECODED_ARGS else decode_arg(op, name, value)
    return _value(op, name, decoded).encode("utf-8", "backslashreplace")


def _text_plan(op: str, names: tuple[str, ...]) -> tuple[Any, ...]:
    args = []
    for name in names:
        kind = (_TEXT_PATH if name in ("path", "path2") else
                _TEXT_DATA if name == "size" and op in DATA_ARGS else _TEXT_VALUE)
        cache: dict[Any, bytes] | None = {} if name in DECODED_ARGS and name not in _UNCACHED else None
        args.append((kind, functools.partial(_text_of, op, name), cache))
    form = RESULT_FORMS.get(op)
    if form is None:
        return (tuple(args), _TEXT_RESULT_PLAIN, None)
    if form in ("entries", "size"):
        return (tuple(args), _TEXT_RESULT_WRAPPED, f"= {{{form}=".encode())
    kind = {"stat": _TEXT_RESULT_STAT, "fh": _TEXT_RESULT_FH}.get(form, _TEXT_RESULT_OTHER)
    return (tuple(args), kind, None)


_TEXT_PLANS = {op: _text_plan(op, names) for op, names in ARG_NAMES.items()}


def encode_text_batch(items: list[tuple[Any, ...]], encode_item: Callable[[tuple[Any, ...]], bytes]
                      ) -> tuple[bytes | bytearray, list[int]]:
    """`encode_jsonl_batch` for the text format: `encode_item(item)` for each raw event (the Python path:
    `format_text(event_of(item))` encoded), written by the compiled module where it is built (the same bytes,
    about a fifth of the CPU)."""
    if _encode_text_events is not None:
        return _encode_text_events(items, _TEXT_PLANS, _ERRNO_NAMES, encode_item)
    return _python_batch(items, encode_item)


def _python_batch(items: list[tuple[Any, ...]], encode_item: Callable[[tuple[Any, ...]], bytes]
                  ) -> tuple[bytearray, list[int]]:
    block, ends = bytearray(), []  # one buffer, not a list of lines (RotatingFile.write_block says why)
    for item in items:
        block += encode_item(item)
        ends.append(len(block))
    return block, ends


def encode_jsonl_batch(items: list[tuple[Any, ...]], encode_item: Callable[[tuple[Any, ...]], bytes]
                       ) -> tuple[bytes | bytearray, list[int]]:
    """The JSONL lines of raw events in one buffer, and where each ends: `encode_item(item)` for each (the
    Python path: `format_jsonl_bytes(event_of(item))` and whatever the caller does about failures), written by
    the compiled module where it is built (the same bytes, ~10x less CPU; it calls `encode_item` for what it does
    not handle)."""
    if _encode_events is not None:
        return _encode_events(items, _PLANS, _HEAD, _ERRNO_NAMES, encode_item)
    return _python_batch(items, encode_item)
