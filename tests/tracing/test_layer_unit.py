"""The layer exposes exactly what the wrapped filesystem implements, and records each call once."""

import errno

import pytest

from fuse_passthrough.binding import FuseOSError, Operations
from fuse_passthrough.tracing import TracingOperations, to_event
from fuse_passthrough.tracing.events import RawEvent


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple] = []

    def put(self, raw: tuple) -> None:
        self.items.append(raw)


class Custom(Operations):  # type: ignore[misc]
    use_ns = True
    flag_nullpath_ok = True

    def getattr(self, path, fh=None):
        if path == "/missing":
            raise FuseOSError(errno.ENOENT)
        return {"st_mode": 0o100644, "st_size": 3, "st_ino": 9, "st_nlink": 1, "st_uid": 0, "st_gid": 0}

    def readdir_with_offset(self, path, offset, fh):
        return [("a", None, 1), ("b", None, 2)]

    def ioctl(self, path, cmd, arg, fh, flags, data):
        return 0

    def write(self, path, data, offset, fh):
        return len(data)


def traced() -> tuple[TracingOperations, ListSink]:
    sink = ListSink()
    return TracingOperations(Custom(), sink, context=lambda: (1000, 1000, 0, 0)), sink


def test_exposes_exactly_the_implemented_callbacks_and_settings() -> None:
    ops, _ = traced()
    for name in ("getattr", "readdir_with_offset", "ioctl", "write"):
        assert callable(getattr(ops, name))
    for name in ("open", "read", "readdir", "mkdir", "lock"):  # not implemented: libfuse must not see them
        assert not hasattr(ops, name)
    assert ops.use_ns is True and ops.flag_nullpath_ok is True


def test_records_results_errors_and_lengths_only() -> None:
    ops, sink = traced()
    assert ops.readdir_with_offset("/", 0, 3) == [("a", None, 1), ("b", None, 2)]
    assert ops.write("/f", b"secret", 0, 3) == 6
    with pytest.raises(FuseOSError):
        ops.getattr("/missing")
    events = [to_event(RawEvent(*raw)) for raw in sink.items]
    assert [e["op"] for e in events] == ["readdir_with_offset", "write", "getattr"]
    assert events[0]["result"] == {"entries": 2}
    assert events[1]["args"]["size"] == 6 and "secret" not in repr(sink.items)
    assert events[2]["errno"] == "ENOENT" and events[2]["comm"] == "[kernel]"
    assert [e["seq"] for e in events] == [1, 2, 3]


def test_process_names_exact_while_young_then_cached(tmp_path) -> None:
    import ctypes
    import threading

    from fuse_passthrough.tracing.layer import ProcessNames

    result: dict[str, object] = {}

    def in_thread() -> None:  # rename a thread of ours, not the test process; /proc/PID/task/TID/comm
        tid = threading.get_native_id()
        names = ProcessNames()
        set_name = ctypes.CDLL(None).prctl
        set_name(15, b"fpt-first", 0, 0, 0)
        ms = 1_000_000
        result["first"] = names.lookup(tid, 0)[0]
        set_name(15, b"fpt-exec", 0, 0, 0)          # like exec right after fork
        result["young"] = names.lookup(tid, 10 * ms)[0]
        set_name(15, b"fpt-later", 0, 0, 0)
        result["cached"] = names.lookup(tid, 100 * ms)[0]   # older than YOUNG_NS, read less than TTL_NS ago
        result["refreshed"] = names.lookup(tid, 2000 * ms)[0]
        result["gone"] = names.lookup(2**22 + 12345, 0)
        names.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert (result["first"], result["young"], result["cached"], result["refreshed"]) == (
        "fpt-first", "fpt-exec", "fpt-exec", "fpt-later")
    assert result["gone"] == (None, None)
