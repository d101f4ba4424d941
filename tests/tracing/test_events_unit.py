"""Unit tests of event decoding: flag names, modes, results, schema."""

import os
import stat

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
    assert ev["duration_ns"] == 1234 and ev["comm"] == "sh" and ev["v"] == 2


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
