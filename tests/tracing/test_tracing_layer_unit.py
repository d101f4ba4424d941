"""The tracing layer (tracing/layer.py): events in the seed's notation from Call objects, paths read before the
call, one event per attribute kind of a SETATTR, what a fault layer did, and filters."""

from __future__ import annotations

import collections
import errno
import marshal
from typing import Any

import pytest

from fuse_passthrough.chain import Call, LayerChain, Next
from fuse_passthrough.lowlevel import abi
from fuse_passthrough.tracing import to_event
from fuse_passthrough.tracing.events import RawEvent
from fuse_passthrough.tracing.filters import EventFilter
from fuse_passthrough.tracing.layer import TracingLayer


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put(self, raw: tuple[Any, ...]) -> None:
        self.items.append(raw)

    def events(self) -> list[dict[str, Any]]:
        return [to_event(RawEvent(*raw)) for raw in self.items]


class Nodes:
    def __init__(self) -> None:
        self.names: dict[int, str] = {1: "/", 2: "/bar"}

    def path(self, ino: int, name: bytes | None = None) -> str | None:
        base = self.names.get(ino)
        if base is None or name is None:
            return base
        return base.rstrip("/") + "/" + name.decode()


class FileInfo:
    def __init__(self, flags: int = 0, fh: int = 0) -> None:
        self.flags, self.fh, self.backing_id, self.direct_io, self.keep_cache = flags, fh, 0, 0, 0


class Entry:
    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.attr = abi.stat_t()
        self.attr.st_mode, self.attr.st_ino = 0o100644, ino


class Ops:
    def __init__(self) -> None:
        self.nodes = Nodes()

    def lookup(self, req: int, parent: int, name: bytes) -> Entry:
        if name == b"nope":
            raise OSError(errno.ENOENT, "no")
        return Entry(2)

    def create(self, req: int, parent: int, name: bytes, mode: int, fi: Any) -> Entry:
        fi.fh = 13
        self.nodes.names[2] = "/bar"
        return Entry(2)

    def unlink(self, req: int, parent: int, name: bytes) -> None:
        self.nodes.names.pop(2, None)  # the name is gone after the call

    def setattr(self, req: int, ino: int, attr: Any, to_set: int, fi: Any) -> tuple[Any, float]:
        return attr, 1.0

    def write(self, req: int, ino: int, data: bytes, off: int, fi: Any) -> int:
        return len(data)

    def open(self, req: int, ino: int, fi: Any) -> None:
        fi.fh, fi.backing_id = 21, 9  # kernel passthrough: the event's result is (fh, backing id)


def context(req: int) -> tuple[int, int, int, int]:
    return (1000, 100, 0, 0o22)  # pid 0 reads no /proc


def chain(*layers: Any, event_filter: EventFilter | None = None) -> tuple[LayerChain, ListSink]:
    sink = ListSink()
    return LayerChain(Ops(), [TracingLayer(sink, event_filter), *layers], context=context), sink


def test_events_keep_the_seed_notation() -> None:
    c, sink = chain()
    c.create(5, 1, b"bar", 0o100644, FileInfo(0o1101, 0))
    c.write(5, 2, b"abcd", 0, FileInfo(fh=13))
    with pytest.raises(FileNotFoundError):
        c.lookup(5, 1, b"nope")
    create, write, lookup = sink.events()
    assert create["op"] == "create" and create["path"] == "/bar"
    assert create["args"]["mode"] == "0o100644" and create["args"]["flags"].startswith("O_WRONLY|O_CREAT|O_TRUNC")
    assert create["result"] == {"fh": 13} and create["uid"] == 1000 and create["gid"] == 100
    assert write["args"]["size"] == 4 and write["result"] == 4
    assert lookup["op"] == "lookup" and lookup["path"] == "/nope" and lookup["errno"] == "ENOENT"


def test_the_path_is_read_before_the_call() -> None:
    c, sink = chain()
    c.unlink(5, 1, b"bar")
    assert sink.events()[0]["path"] == "/bar"


def test_a_setattr_is_one_event_per_attribute_kind() -> None:
    c, sink = chain()
    attr = abi.stat_t()
    attr.st_mode, attr.st_size = 0o100600, 7
    c.setattr(5, 2, attr, abi.FUSE_SET_ATTR_MODE | abi.FUSE_SET_ATTR_SIZE, None)
    assert [(e["op"], e["path"]) for e in sink.events()] == [("chmod", "/bar"), ("truncate", "/bar")]
    assert sink.events()[1]["args"]["length"] == 7


def test_a_setattr_changing_no_attribute_is_a_getattr_with_its_attributes() -> None:
    """chown(f, -1, -1) sends a SETATTR of the ctime only: traced as the getattr its reply is, with the stat."""
    c, sink = chain()
    attr = abi.stat_t()
    attr.st_mode, attr.st_size, attr.st_ino, attr.st_nlink = 0o100644, 9, 2, 1
    c.setattr(5, 2, attr, abi.FUSE_SET_ATTR_CTIME, None)
    (event,) = sink.events()
    assert (event["op"], event["path"], event["errno"]) == ("getattr", "/bar", None)
    assert event["result"] == {"mode": "0o100644", "size": 9, "ino": 2, "nlink": 1, "uid": 0, "gid": 0}


def test_what_an_inner_layer_injected_is_in_the_event() -> None:
    class Inject:
        def handle(self, call: Call, next: Next) -> Any:
            call.injected = {"errno": errno.EIO}
            raise OSError(errno.EIO, "injected")

    c, sink = chain(Inject())
    with pytest.raises(OSError):
        c.write(5, 2, b"x", 0, FileInfo(fh=13))
    (event,) = sink.events()
    assert event["errno"] == "EIO" and event["injected"] == "EIO"


def test_op_filters_leave_unwanted_handlers_unwrapped() -> None:
    sink = ListSink()
    layer = TracingLayer(sink, EventFilter(exclude_ops={"write", "lookup"}))
    ops = Ops()
    c = LayerChain(ops, [layer], context=context)
    assert c.write == ops.write and c.lookup == ops.lookup and c.create != ops.create
    assert layer.wants("setattr")
    assert not TracingLayer(sink, EventFilter(ops={"read"})).wants("setattr")
    assert TracingLayer(sink, EventFilter(ops={"chmod"})).wants("setattr")


class Passing:
    """A layer that only passes calls on: with it beside the tracing layer, the chain takes the generic path."""

    def handle(self, call: Call, next: Next) -> Any:
        return next(call)


class Result(bytes):
    """Stands in for every handler's result: each describer reads what it needs (bytes for readlink, getxattr
    and listxattr; an entry's attr; getattr's (stat, timeout); a directory buffer's entries; statfs' fields)."""

    def __new__(cls) -> Result:
        self = super().__new__(cls, b"user.a\0")
        self.ino = 2
        self.attr = abi.stat_t()
        # every field an event reads, at the edges of its type (the compiled layer reads the struct's memory)
        self.attr.st_mode, self.attr.st_size, self.attr.st_ino = 0o100644, 2**40 + 5, 2**63 + 2
        self.attr.st_nlink, self.attr.st_uid, self.attr.st_gid = 3, 1000, 2**32 - 2
        self.entries = 3
        for k in ("f_bsize", "f_blocks", "f_bfree", "f_files", "f_ffree"):
            setattr(self, k, 4)
        return self

    def __getitem__(self, i: Any) -> Any:
        return self.attr


def _handler_args(op: str) -> tuple[Any, ...]:
    fi = FileInfo(0o101, 13)
    attr = abi.stat_t()
    attr.st_mode, attr.st_size, attr.st_uid, attr.st_gid = 0o100600, 9, 5, 0xFFFFFFFF
    return {
        "lookup": (1, b"bar"), "forget": (2, 3), "forget_multi": ([(2, 1), (3, 1)],), "getattr": (2, fi),
        "setattr": (2, attr, abi.FUSE_SET_ATTR_MODE | abi.FUSE_SET_ATTR_UID | abi.FUSE_SET_ATTR_SIZE
                    | abi.FUSE_SET_ATTR_MTIME, fi),
        "readlink": (2,), "mknod": (1, b"n", 0o10666, 0), "mkdir": (1, b"d", 0o777), "symlink": (b"t", 1, b"s"),
        "link": (2, 1, b"l"), "unlink": (1, b"bar"), "rmdir": (1, b"d"), "rename": (1, b"bar", 1, b"baz", 1),
        "open": (2, fi), "create": (1, b"bar", 0o100666, fi), "tmpfile": (1, 0o100600, fi), "read": (2, 10, 0, fi),
        "write": (2, b"abc", 0, fi), "flush": (2, fi), "release": (2, fi), "fsync": (2, 1, fi), "opendir": (2, fi),
        "readdir": (2, 100, 0, fi), "readdirplus": (2, 100, 0, fi), "releasedir": (2, fi), "fsyncdir": (2, 0, fi),
        "statfs": (2,), "access": (2, 4), "setxattr": (2, b"user.a", b"xy", 1), "getxattr": (2, b"user.a", 10),
        "listxattr": (2, 100), "removexattr": (2, b"user.a"), "fallocate": (2, 0, 0, 10, fi),
        "copy_file_range": (2, 0, fi, 2, 5, fi, 10, 0), "lseek": (2, 0, 1, fi),
    }[op]


@pytest.fixture(params=[True, False], ids=["compiled", "python"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The direct path compiled (tracing/_recorder.c) or its Python closure (where the module is not built)."""
    from fuse_passthrough.tracing import layer
    if request.param and layer.Recorder is None:
        pytest.skip("the C module _recorder is not built")
    if not request.param:
        monkeypatch.setattr(layer, "Recorder", None)
    return bool(request.param)


def _generic(handler: Any) -> bool:
    """The chain's generic path: a Call through the layers' handle()."""
    return getattr(handler, "__qualname__", "").startswith("LayerChain._chained")


@pytest.mark.parametrize("fail", [False, True])
def test_the_direct_path_records_what_the_generic_path_records(fail: bool, compiled: bool) -> None:
    from fuse_passthrough.tracing.layer import DESCRIBE

    def make_ops() -> Any:
        class AllOps:
            nodes = Nodes()

        def handler(op: str) -> Any:
            def h(req: int, *a: Any) -> Any:
                if fail:
                    raise OSError(errno.EACCES, "no")
                return Result()
            return h
        ops = AllOps()
        for op in DESCRIBE:
            if op not in ("init", "destroy"):
                setattr(ops, op, handler(op))
        return ops

    from fuse_passthrough.tracing.sinks import _stand_in, pending_events

    direct_sink, generic_sink = ListSink(), ListSink()
    buffered_sink = HotPathSink(batch=10**6, pending=pending_events())  # as into a ProcessSink
    direct = LayerChain(make_ops(), [TracingLayer(direct_sink)], context=context)
    generic = LayerChain(make_ops(), [TracingLayer(generic_sink), Passing()], context=context)
    buffered = LayerChain(make_ops(), [TracingLayer(buffered_sink)], context=context)
    ops = [op for op in DESCRIBE if op not in ("init", "destroy")]
    assert not any(_generic(getattr(direct, op)) for op in ops)
    assert all(_generic(getattr(generic, op)) for op in ops)
    if compiled:
        assert {type(getattr(direct, op)).__name__ for op in ops} == {"Traced"}
    for op in ops:
        for c in (direct, generic, buffered):
            try:
                getattr(c, op)(5, *_handler_args(op))
            except OSError:
                assert fail
    assert len(direct_sink.items) == len(generic_sink.items) > len(ops)

    def comparable(raw: tuple[Any, ...]) -> tuple[Any, ...]:
        r = RawEvent(*raw)
        return (r.seq, r.op, r.args, r.result, r.err, r.pid, r.uid, r.gid, r.comm, r.cmdline, r.injected)
    assert [comparable(r) for r in direct_sink.items] == [comparable(r) for r in generic_sink.items]
    # what a ProcessSink's writer decodes: the same, with what marshal cannot write as its repr
    assert [comparable(r) for r in buffered_sink.taken()] == [comparable(_stand_in(r)) for r in generic_sink.items]
    assert [e["op"] for e in direct_sink.events()][:8] == ["lookup", "forget", "forget_multi", "getattr", "chmod",
                                                           "chown", "truncate", "utimens"]


class HotPathSink(ListSink):
    """A sink with ProcessSink's hot path: pending events the compiled layer appends to (a deque, or ProcessSink's
    own, sinks.pending_events), and the call at `batch`; `put` does the same."""

    def __init__(self, batch: int, pending: Any = None) -> None:
        super().__init__()
        import collections
        self.pending = collections.deque() if pending is None else pending
        self.batch = batch
        self.backlogs: list[int] = []
        self.puts = 0

    def put(self, raw: tuple[Any, ...]) -> None:
        self.puts += 1
        self.pending.append(raw)
        if len(self.pending) >= self.batch:
            self.backlogs.append(len(self.pending))

    def hot_path(self) -> tuple[Any, int, Any]:
        return self.pending, self.batch, self.backlogs.append

    def taken(self) -> list[tuple[Any, ...]]:
        """What a ProcessSink's writer would decode."""
        if isinstance(self.pending, collections.deque):
            return list(self.pending)
        frame = self.pending.take()
        return [] if frame is None else marshal.loads(frame[0][4:])


@pytest.mark.parametrize("pending", ["deque", "process sink's"])
def test_events_reach_a_sink_through_its_hot_path(compiled: bool, pending: str) -> None:
    import os
    import time

    from fuse_passthrough.tracing.sinks import pending_events

    sink = HotPathSink(batch=2, pending=pending_events() if pending != "deque" else None)
    tracing = TracingLayer(sink)
    me = os.getpid()
    # a name cached long enough ago to be trusted: events take it without reading /proc
    now = time.perf_counter_ns()
    tracing.names.cache[me] = (now - 10**9, now, "cached-name", None)
    c = LayerChain(Ops(), [tracing], context=lambda req: (1000, 100, me, 0o22))
    c.lookup(5, 1, b"bar")
    with pytest.raises(OSError) as raised:
        c.lookup(5, 1, b"nope")
    assert raised.value.errno == errno.ENOENT
    c.write(5, 2, b"abcd", 0, FileInfo(fh=7))
    c.open(5, 2, FileInfo(flags=0o2))
    events = [to_event(RawEvent(*raw)) for raw in sink.taken()]
    assert [(e["op"], e["path"], e["args"], e["errno"]) for e in events] == [
        ("lookup", "/bar", {}, None), ("lookup", "/nope", {}, "ENOENT"),
        ("write", "/bar", {"size": 4, "offset": 0, "fh": 7}, None), ("open", "/bar", {"flags": "O_RDWR"}, None)]
    assert events[0]["result"]["ino"] == 2 and events[1]["result"] is None and events[2]["result"] == 4
    assert events[3]["result"] == {"fh": 21, "passthrough": 9}
    assert {(e["pid"], e["uid"], e["gid"], e["comm"]) for e in events} == {(me, 1000, 100, "cached-name")}
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert sink.backlogs == [2, 3, 4]
    assert sink.puts == (0 if compiled else 4)  # the compiled layer appends itself
    # a name cached too long ago is read again
    tracing.names.cache[me] = (now - 10**10, now - 10**10, "stale", None)
    c.lookup(5, 1, b"bar")
    with open(f"/proc/{me}/comm") as f:
        assert to_event(RawEvent(*sink.taken()[-1]))["comm"] == f.read().strip()


def test_a_failure_without_an_errno_is_recorded_as_eio_and_raised_as_it_was(compiled: bool) -> None:
    failure = KeyError("x")

    class Failing(Ops):
        def unlink(self, req: int, parent: int, name: bytes) -> None:
            raise failure

        def rmdir(self, req: int, parent: int, name: bytes) -> None:
            raise OSError("no errno")

    sink = ListSink()
    c = LayerChain(Failing(), [TracingLayer(sink)], context=context)
    with pytest.raises(KeyError) as raised:
        c.unlink(5, 1, b"bar")
    assert raised.value is failure and raised.value.__traceback__ is not None
    with pytest.raises(OSError):
        c.rmdir(5, 1, b"d")
    assert [(e["op"], e["path"], e["errno"]) for e in sink.events()] == [("unlink", "/bar", "EIO"),
                                                                        ("rmdir", "/d", "EIO")]


def test_the_compiled_recorder_is_built() -> None:
    """make test (and make run) install a C compiler and Python's headers: the build must not have skipped it."""
    from fuse_passthrough.tracing import layer
    assert layer.Recorder is not None


def test_the_compiled_layer_rejects_a_plan_it_cannot_follow() -> None:
    from fuse_passthrough.tracing import layer

    if layer.Recorder is None:
        pytest.skip("the C module _recorder is not built")
    rec = layer.Recorder(iter(range(1, 10)), {}, lambda pid, now: ("x", None), 0, 0, context, print, None, 0, None)

    def traced(plan: Any) -> Any:
        return rec.traced("write", print, Nodes().path, 0, -1, -1, -1, print, print, plan)
    assert traced(layer.PLANS["write"]).__name__ == "write"
    for bad in [(("path",), ("nonesuch",)), (("same",), ("same",)), (("path",), ("path",)), (("attr", 1),),
                (("arg", "x"), ("same",)), ()]:
        with pytest.raises((ValueError, TypeError)):
            traced(bad)


def test_a_setattr_records_only_the_attribute_kinds_the_op_filter_wants(compiled: bool) -> None:
    sink = ListSink()
    c = LayerChain(Ops(), [TracingLayer(sink, EventFilter(exclude_ops={"chmod", "truncate"}))], context=context)
    attr = abi.stat_t()
    attr.st_mode, attr.st_size, attr.st_uid = 0o100600, 9, 5
    c.setattr(5, 2, attr, abi.FUSE_SET_ATTR_MODE | abi.FUSE_SET_ATTR_UID | abi.FUSE_SET_ATTR_SIZE, FileInfo(fh=4))
    assert [(e["op"], e["args"]) for e in sink.events()] == [("chown", {"uid": 5, "gid": -1, "fh": 4})]
    assert [e["seq"] for e in sink.events()] == [1]
