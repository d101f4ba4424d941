"""The fault layer (faults/layer.py): rules applied to the chain's Call objects."""

from __future__ import annotations

import errno
import time
from typing import Any

import pytest

from fuse_passthrough.chain import LayerChain
from fuse_passthrough.faults import parse_rule
from fuse_passthrough.faults.layer import FaultLayer
from fuse_passthrough.lowlevel import abi


class Nodes:
    names = {1: "/", 2: "/data", 3: "/data/x.db", 4: "/other"}

    def path(self, ino: int, name: bytes | None = None) -> str | None:
        base = self.names.get(ino)
        if base is None or name is None:
            return base
        return base.rstrip("/") + "/" + name.decode()


class FileInfo:
    def __init__(self) -> None:
        self.flags, self.fh, self.backing_id, self.direct_io, self.keep_cache = 0, 9, 0, 0, 1


class Ops:
    def __init__(self) -> None:
        self.nodes = Nodes()
        self.seen: list[tuple[Any, ...]] = []

    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> bytes:
        self.seen.append(("read", ino, size))
        return b"r" * size

    def write(self, req: int, ino: int, data: bytes, off: int, fi: Any) -> int:
        self.seen.append(("write", ino, data))
        return len(data)

    def open(self, req: int, ino: int, fi: Any) -> None:
        self.seen.append(("open", ino))

    def mkdir(self, req: int, parent: int, name: bytes, mode: int) -> None:
        self.seen.append(("mkdir", parent, name))

    def setattr(self, req: int, ino: int, attr: Any, to_set: int, fi: Any) -> tuple[Any, float]:
        self.seen.append(("setattr", ino, to_set))
        return attr, 1.0


def context(req: int) -> tuple[int, int, int, int]:
    return (1000, 100, 0, 0o22)


def faulty(*rules: str, reloadable: bool = False) -> tuple[LayerChain, Ops, FaultLayer]:
    ops = Ops()
    layer = FaultLayer([parse_rule(r) for r in rules], reloadable=reloadable)
    return LayerChain(ops, [layer], context=context), ops, layer


def test_an_errno_is_injected_instead_of_the_call_where_the_path_matches() -> None:
    c, ops, _ = faulty("op=write,path=/data/*.db,errno=ENOSPC")
    with pytest.raises(OSError) as e:
        c.write(1, 3, b"abc", 0, FileInfo())
    assert e.value.errno == errno.ENOSPC and ops.seen == []
    assert c.write(1, 4, b"abc", 0, FileInfo()) == 3  # another path


def test_short_reads_and_writes_and_direct_io_for_the_files_they_match() -> None:
    c, ops, _ = faulty("op=read,path=/data/x.db,short=2", "op=write,short=1")
    assert c.read(1, 3, 100, 0, FileInfo()) == b"rr"
    assert c.write(1, 4, b"abc", 0, FileInfo()) == 1 and ops.seen[-1] == ("write", 4, b"a")
    fi = FileInfo()
    c.open(1, 3, fi)
    assert fi.direct_io == 1 and fi.keep_cache == 0
    other = FileInfo()
    c.open(1, 4, other)
    assert other.direct_io == 0


def test_a_setattr_is_matched_as_the_operations_it_makes() -> None:
    c, ops, _ = faulty("op=truncate,errno=EPERM")
    attr = abi.stat_t()
    c.setattr(1, 3, attr, abi.FUSE_SET_ATTR_MODE, None)  # a chmod: not matched
    with pytest.raises(OSError):
        c.setattr(1, 3, attr, abi.FUSE_SET_ATTR_MODE | abi.FUSE_SET_ATTR_SIZE, None)
    assert len(ops.seen) == 1


def test_counters_delays_and_callers() -> None:
    c, ops, _ = faulty("op=mkdir,errno=EIO,nth=2", "op=mkdir,delay=30ms,uid=1000")
    t0 = time.monotonic()
    c.mkdir(1, 1, b"a", 0o755)
    with pytest.raises(OSError):
        c.mkdir(1, 1, b"b", 0o755)
    assert time.monotonic() - t0 >= 0.06
    assert [s[2] for s in ops.seen] == [b"a"]
    _, _, layer = faulty("op=mkdir,errno=EIO,uid=0")
    c2 = LayerChain(Ops(), [layer], context=context)
    c2.mkdir(1, 1, b"a", 0o755)  # uid 1000: not matched


def test_only_named_operations_pass_through_the_layer_unless_reloadable() -> None:
    c, ops, layer = faulty("op=mkdir,errno=EIO")
    assert c.read == ops.read and c.mkdir != ops.mkdir
    c, ops, layer = faulty("op=mkdir,errno=EIO", reloadable=True)
    assert c.read != ops.read
    layer.set_rules([parse_rule("op=read,errno=EIO")])
    with pytest.raises(OSError):
        c.read(1, 3, 10, 0, FileInfo())
    c.mkdir(1, 1, b"a", 0o755)


def test_rules_may_name_the_inode_cores_own_operations() -> None:
    assert parse_rule("op=lookup|readdirplus,errno=EIO").ops == {"lookup", "readdirplus"}
