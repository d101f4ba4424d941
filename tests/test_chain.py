"""The layer chain (chain.py): one Call per request, through the layers in order, with lazy paths and
caller, the outcome on the call, and no cost for operations no layer wants."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from fuse_passthrough.chain import Call, LayerChain, Next, event_ops
from fuse_passthrough.lowlevel import abi


class Nodes:
    def __init__(self) -> None:
        self.names = {1: "/", 2: "/dir", 3: "/dir/f"}
        self.asked: list[tuple[int, bytes | None]] = []

    def path(self, ino: int, name: bytes | None = None) -> str | None:
        self.asked.append((ino, name))
        base = self.names.get(ino)
        if base is None or name is None:
            return base
        return base.rstrip("/") + "/" + name.decode()


class Ops:
    def __init__(self) -> None:
        self.nodes = Nodes()
        self.calls: list[tuple[Any, ...]] = []

    def init(self, conn: Any) -> None:
        self.calls.append(("init", conn))

    def unlink(self, req: int, parent: int, name: bytes) -> None:
        self.calls.append(("unlink", req, parent, name))
        if name == b"missing":
            raise OSError(errno.ENOENT, "no")

    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> bytes:
        self.calls.append(("read", req, ino, size, off))
        return b"x" * size

    def rename(self, req: int, parent: int, name: bytes, newparent: int, newname: bytes, flags: int) -> None:
        self.calls.append(("rename", req))


class Recorder:
    """A layer that notes what it saw before and after the inner layers."""

    def __init__(self, name: str, log: list[str], ops: tuple[str, ...] | None = None) -> None:
        self.name, self.log, self.ops = name, log, ops

    def wants(self, op: str) -> bool:
        return self.ops is None or op in self.ops

    def handle(self, call: Call, next: Next) -> Any:
        self.log.append(f"{self.name}>{call.op}")
        try:
            return next(call)
        finally:
            self.log.append(f"{self.name}<{call.op}:{call.errno}")


def context(req: int) -> tuple[int, int, int, int]:
    return (1000, 100, req * 10, 0o22)


def test_the_chain_exposes_exactly_the_operations_handlers() -> None:
    ops = Ops()
    chain = LayerChain(ops, [Recorder("a", [])], context=context)
    assert callable(chain.unlink) and callable(chain.read) and callable(chain.init)
    assert not hasattr(chain, "lookup") and not hasattr(chain, "getattr")


def test_layers_run_in_order_and_the_terminal_stores_the_result() -> None:
    ops, log = Ops(), []
    seen: list[Call] = []

    class Keep:
        def handle(self, call: Call, next: Next) -> Any:
            seen.append(call)
            return next(call)

    chain = LayerChain(ops, [Recorder("outer", log), Recorder("inner", log), Keep()], context=context)
    assert chain.read(7, 3, 4, 0, None) == b"xxxx"
    assert log == ["outer>read", "inner>read", "inner<read:0", "outer<read:0"]
    call = seen[0]
    assert call.result == b"xxxx" and call.ino == 3 and call.req == 7 and call.args == (3, 4, 0, None)
    assert call.caller == (1000, 100, 70, 0o22)


def test_an_error_propagates_and_a_layer_records_it_on_the_call() -> None:
    ops = Ops()
    calls: list[Call] = []

    class Catch:
        def handle(self, call: Call, next: Next) -> Any:
            calls.append(call)
            try:
                return next(call)
            except BaseException as e:
                call.fail(e)
                raise

    chain = LayerChain(ops, [Catch()], context=context)
    with pytest.raises(OSError):
        chain.unlink(1, 2, b"missing")
    assert calls[0].errno == errno.ENOENT
    assert Call("x", 0, ()).fail(ValueError()) == errno.EIO


def test_paths_come_from_the_node_table_only_when_asked_and_once() -> None:
    ops = Ops()
    paths: list[tuple[str | None, str | None]] = []

    class AskTwice:
        def handle(self, call: Call, next: Next) -> Any:
            paths.append((call.path, call.path2))
            paths.append((call.path, call.path2))
            return next(call)

    chain = LayerChain(ops, [Recorder("quiet", [])], context=context)
    chain.unlink(1, 2, b"f")
    assert ops.nodes.asked == []  # nobody asked: no path computed
    chain = LayerChain(ops, [AskTwice()], context=context)
    chain.rename(1, 2, b"f", 1, b"g", 0)
    assert paths == [("/dir/f", "/g")] * 2
    assert ops.nodes.asked == [(2, b"f"), (1, b"g")]


def test_a_layer_may_change_the_arguments_and_answer_instead() -> None:
    ops = Ops()

    class Shorten:
        def handle(self, call: Call, next: Next) -> Any:
            if call.op == "read":
                call.args = (call.args[0], 1, *call.args[2:])
            return next(call)

    class Refuse:
        def handle(self, call: Call, next: Next) -> Any:
            raise OSError(errno.EROFS, "no")

    assert LayerChain(ops, [Shorten()], context=context).read(1, 3, 100, 0, None) == b"x"
    with pytest.raises(OSError):
        LayerChain(ops, [Refuse()], context=context).unlink(1, 2, b"f")
    assert ("unlink", 1, 2, b"f") not in ops.calls


def test_operations_no_layer_wants_are_the_operations_own_handlers() -> None:
    ops, log = Ops(), []
    chain = LayerChain(ops, [Recorder("r", log, ops=("read",))], context=context)
    assert chain.unlink == ops.unlink and chain.init == ops.init
    chain.unlink(1, 2, b"f")
    assert log == []
    assert LayerChain(ops, []).read == ops.read


def test_init_goes_through_the_chain_without_a_request() -> None:
    ops, seen = Ops(), []

    class Keep:
        def handle(self, call: Call, next: Next) -> Any:
            seen.append(call)
            return next(call)

    LayerChain(ops, [Keep()], context=context).init("conn")
    assert ops.calls == [("init", "conn")]
    assert seen[0].path == "/" and seen[0].caller == (0, 0, 0, 0) and seen[0].ino == 0


def test_event_ops_of_a_setattr_are_one_per_attribute_kind() -> None:
    st = abi.stat_t()
    both = abi.FUSE_SET_ATTR_MODE | abi.FUSE_SET_ATTR_SIZE
    assert event_ops(Call("setattr", 1, (3, st, both, None))) == ("chmod", "truncate")
    assert event_ops(Call("setattr", 1, (3, st, abi.FUSE_SET_ATTR_MTIME_NOW, None))) == ("utimens",)
    assert event_ops(Call("setattr", 1, (3, st, abi.FUSE_SET_ATTR_GID, None))) == ("chown",)
    assert event_ops(Call("setattr", 1, (3, st, 0, None))) == ("getattr",)
    assert event_ops(Call("lookup", 1, (1, b"a"))) == ("lookup",)
