"""inode_mount's collector policy: what survives a full collection is frozen, nodes are still freed."""

import gc

from fuse_passthrough.inode_mount import freeze_survivors
from fuse_passthrough.inodes import Node


def test_survivors_of_a_full_collection_are_frozen_and_nodes_still_freed() -> None:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()  # no automatic pass in between: the test makes each one
    gc.callbacks.append(freeze_survivors)
    try:
        before = gc.get_freeze_count()
        table: dict[int, Node] = {}
        for i in range(10_000):
            node = Node(i, (1, i), -1, 0o40000)
            node.names.append((1, b"d%d" % i))
            table[i] = node
        gc.collect(1)
        assert gc.get_freeze_count() - before < 10_000  # a younger generation's pass freezes nothing
        gc.collect()
        frozen = gc.get_freeze_count()
        assert frozen - before >= 10_000  # the next full pass will not walk them
        table.clear()  # forgotten: freed by their reference counts, frozen or not
        assert gc.get_freeze_count() <= frozen - 10_000

        cycle: list[object] = []
        cycle.append(cycle)  # made after the freeze: still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.callbacks.remove(freeze_survivors)
        gc.unfreeze()
        if enabled:
            gc.enable()
