"""Unit tests of event decoding: flag names, modes, results, schema."""

import os
import stat
from typing import Any

import pytest

from fuse_passthrough.tracing.events import SCHEMA_FIELDS, RawEvent, open_flags, to_event


def raw(op: str, args: tuple, result=None, err: int = 0, pid: int = 42) -> RawEvent:
    return RawEvent(7, 1700000000.5, op, args, result, err, 1234, pid, 1000, 1000, "sh", None)


def test_open_flags_are_named() -> None:
    assert open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == "O_WRONLY|O_CREAT|O_TRUNC"
    assert open_flags(os.O_RDONLY) == "O_RDONLY"
    assert open_flags(os.O_RDWR | os.O_APPEND | os.O_EXCL) == "O_RDWR|O_APPEND|O_EXCL"
    assert open_flags(os.O_WRONLY | os.O_SYNC) == "O_WRONLY|O_SYNC"
    assert "0x" not in open_flags(os.O_RDONLY | 0o100000)  # O_LARGEFILE as the kernel sends it (x86_64)


def test_create_event_fields() -> None:
    ev = to_event(raw("create", ("/bar", stat.S_IFREG | 0o664, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 5))
    assert tuple(ev) == SCHEMA_FIELDS
    assert ev["path"] == "/bar" and ev["path2"] is None
    assert ev["args"] == {"mode": "0o100664", "flags": "O_WRONLY|O_CREAT|O_TRUNC"}
    assert ev["result"] == {"fh": 5}
    assert ev["errno"] is None
    assert ev["duration_ns"] == 1234 and ev["comm"] == "sh" and ev["v"] == 3


def test_error_event_has_errno_name_and_no_result() -> None:
    ev = to_event(raw("getattr", ("/.Trash", None), None, err=2))
    assert ev["errno"] == "ENOENT" and ev["result"] is None and ev["args"] == {"fh": None}


def test_rename_and_link_paths() -> None:
    ev = to_event(raw("rename", ("/a", "/b", 1)))
    assert (ev["path"], ev["path2"], ev["args"]) == ("/a", "/b", {"flags": "RENAME_NOREPLACE"})
    ev = to_event(raw("link", ("/new", "/existing")))  # the recorded order (ARG_NAMES): new name first
    assert (ev["path"], ev["path2"]) == ("/existing", "/new")
    ev = to_event(raw("symlink", ("/l", "target")))
    assert (ev["path"], ev["path2"]) == ("/l", "target")


def test_utimens_special_values() -> None:
    ev = to_event(raw("utimens", ("/f", ((0, (1 << 30) - 1), (5, (1 << 30) - 2)), None)))
    assert ev["args"]["times"] == ["UTIME_NOW", "UTIME_OMIT"]
    ev = to_event(raw("utimens", ("/f", ((1, 5), (2, 7)), 3)))
    assert ev["args"]["times"] == [1_000_000_005, 2_000_000_007]


def test_stat_result_is_compact() -> None:
    st = os.stat("/")
    ev = to_event(raw("getattr", ("/", None), st))
    assert ev["result"] == {"mode": oct(st.st_mode), "size": st.st_size, "ino": st.st_ino,
                            "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid}


def test_event_of_is_to_event_for_every_operation() -> None:
    """The writer's event_of gives to_event's dict, field order included, for every operation's arguments, a
    result or an error, what a fault layer did, a cmdline, extra unnamed arguments and old 12-field tuples."""
    from fuse_passthrough.tracing.events import ARG_NAMES, event_of

    samples: dict[str, Any] = {
        "flags": 0o1101, "mode": 0o100644, "mask": 6, "whence": 3, "times": ((1, 2), (3, (1 << 30) - 2)),
        "dev": os.makedev(8, 1), "uid": -1, "gid": 5, "path": "/a", "path2": "/b", "fh": 9, "size": 10,
    }
    results: list[Any] = [None, 0, 5, (0o100644, 3, 4, 1, 0, 0), (7, 2), [".", ".."], {"f_bsize": 4096}]
    items: list[tuple[Any, ...]] = []
    for op, names in ARG_NAMES.items():
        args = tuple(samples.get(n, 3) for n in names)
        for result in results:
            for err, injected in ((0, None), (2, {"errno": 2}), (0, {"delay_ns": 5}), (0, {"short": 3})):
                items.append((11, 1.5, op, args, result, err, 7, 42, 1000, 100, "sh", None, injected))
        items.append((12, 1.5, op, (*args, None, 17), 0, 0, 7, 0, 0, 0, None, ["sh", "-c"], None))
        items.append((13, 1.5, op, args[:1], 0, 0, 7, 0, 0, 0, "[kernel]", None))
        if op == "mode" or "mode" in names:
            items.append((14, 1.5, op, tuple(None for _ in names), 0, 0, 7, 1, 0, 0, "x", None, None))
    compared = 0
    for item in items:
        try:
            expected = to_event(RawEvent(*item))
        except (AttributeError, TypeError, IndexError, KeyError, ValueError) as e:  # a result that op never has (statfs' dict, stat tuples...)
            with pytest.raises(type(e)):
                event_of(item)
            continue
        got = event_of(item)
        compared += 1
        assert got == expected and list(got) == list(expected), item
    assert compared > 1000
