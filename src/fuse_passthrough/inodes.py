"""The inode core's node table: one kernel inode per source object, keyed by the source's (st_dev, st_ino).

Each `Node` holds an O_PATH fd of its source object, so requests name objects by node id and never resolve a
path; hard links of one file are one node. The kernel counts the entry replies it got for a node (lookup,
create, mknod, mkdir, symlink, link, readdirplus entries) and gives them back with FORGET / BATCH_FORGET: at 0
the node's fd is closed and the node dropped, so the table holds what the kernel holds, not what was ever
touched. While the fd is open, the source inode cannot be freed, so its (st_dev, st_ino) cannot be reused.

Names: the table also keeps the (parent node, name) entries the kernel knows (from lookups, creates,
renames and unlinks), for a best-effort path (traces) and for turning a path the SOURCE watcher reports into
the (parent node, name) and node to invalidate. Node ids are never reused within a mount, so every node's
generation is 0.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading

ROOT_ID = 1


class Node:
    """One kernel inode. `lookups` and `opens` are changed under the table's lock only."""

    __slots__ = ("nodeid", "key", "fd", "generation", "lookups", "opens", "names", "kind", "backing_id", "watched",
                 "pages")

    def __init__(self, nodeid: int, key: tuple[int, int], fd: int, kind: int) -> None:
        self.nodeid = nodeid
        self.key = key
        self.fd = fd  # O_PATH
        self.generation = 0
        self.lookups = 0
        self.opens = 0  # open file handles (kernel passthrough: the backing id lives as long as they do)
        self.names: list[tuple[int, bytes]] = []  # (parent node id, name), most recent last
        self.kind = kind  # stat.S_IFMT of the source object (it never changes for one inode)
        self.backing_id = 0
        # A directory: time.monotonic_ns() when the SOURCE watcher began to see its entries change (0: it does
        # not). Replies made from a stat taken after that may carry the long timeouts.
        self.watched = 0
        # A regular file: (st_ctime_ns, st_mtime_ns, st_size) of the source file when the kernel's pages of it
        # were last dropped, if no change since can share that ctime; None: they must be dropped at the next open.
        self.pages: tuple[int, int, int] | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR

    @property
    def proc(self) -> str:
        """The /proc/self/fd name of the node's fd, for calls that take only a path."""
        return f"/proc/self/fd/{self.fd}"


class NodeTable:
    """Thread-safe: libfuse serves requests from several threads."""

    def __init__(self, root_fd: int) -> None:
        st = os.fstat(root_fd)
        root = Node(ROOT_ID, (st.st_dev, st.st_ino), root_fd, stat.S_IFDIR)
        root.lookups = 1  # the kernel never forgets the root
        self.root = root
        self._lock = threading.Lock()
        self._by_id: dict[int, Node] = {ROOT_ID: root}
        self._by_key: dict[tuple[int, int], Node] = {root.key: root}
        self._children: dict[tuple[int, bytes], int] = {}  # (parent id, name) -> node id
        self._ids = itertools.count(ROOT_ID + 1)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, nodeid: int) -> Node:
        node = self._by_id.get(nodeid)
        if node is None:  # the kernel asked about a node it had forgotten: a bug somewhere, not a crash
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return node

    # -- lookup counts
    def enter(self, parent: int, name: bytes | None, fd: int, st: os.stat_result) -> Node:
        """Count one entry reply for the object `fd` (O_PATH, ours from now on: closed here if the object already
        has a node) found as `name` in `parent` (None: no name, e.g. O_TMPFILE)."""
        key = (st.st_dev, st.st_ino)
        with self._lock:
            node = self._by_key.get(key)
            if node is None:
                node = Node(next(self._ids), key, fd, stat.S_IFMT(st.st_mode))
                self._by_key[key] = node
                self._by_id[node.nodeid] = node
                fd = -1
            node.lookups += 1
            if name is not None:
                self._name_locked(node, parent, name)
        if fd != -1:
            os.close(fd)
        return node

    def forget(self, nodeid: int, count: int) -> None:
        with self._lock:
            node = self._by_id.get(nodeid)
            if node is None or nodeid == ROOT_ID:
                return
            node.lookups -= count
            if node.lookups > 0:
                return
            del self._by_id[nodeid]
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]
            for entry in node.names:
                if self._children.get(entry) == nodeid:
                    del self._children[entry]
            node.names.clear()
        os.close(node.fd)

    # -- open handles
    def opened(self, node: Node) -> int:
        """Count an open handle; returns the number open now."""
        with self._lock:
            node.opens += 1
            return node.opens

    def released(self, node: Node) -> int:
        """Count a released handle; returns the number still open."""
        with self._lock:
            node.opens -= 1
            return node.opens

    # -- names
    def _name_locked(self, node: Node, parent: int, name: bytes) -> None:
        entry = (parent, name)
        old = self._children.get(entry)
        if old == node.nodeid:
            if entry in node.names:
                node.names.remove(entry)
            node.names.append(entry)
            return
        if old is not None:
            self._unname_locked(parent, name)
        self._children[entry] = node.nodeid
        node.names.append(entry)

    def _unname_locked(self, parent: int, name: bytes) -> int | None:
        nodeid = self._children.pop((parent, name), None)
        if nodeid is not None:
            node = self._by_id.get(nodeid)
            if node is not None and (parent, name) in node.names:
                node.names.remove((parent, name))
        return nodeid

    def removed(self, parent: int, name: bytes) -> None:
        """`name` was unlinked or removed from `parent`."""
        with self._lock:
            self._unname_locked(parent, name)

    def renamed(self, parent: int, name: bytes, newparent: int, newname: bytes, exchange: bool) -> None:
        with self._lock:
            moved = self._unname_locked(parent, name)
            other = self._unname_locked(newparent, newname)
            if moved is not None and moved in self._by_id:
                self._name_locked(self._by_id[moved], newparent, newname)
            if exchange and other is not None and other in self._by_id:
                self._name_locked(self._by_id[other], parent, name)

    def find(self, st: os.stat_result) -> Node | None:
        """The node of the source object `st` describes, if the kernel holds one."""
        return self._by_key.get((st.st_dev, st.st_ino))

    def by_key(self, key: tuple[int, int]) -> Node | None:
        """The node of the source object (st_dev, st_ino), if the kernel holds one."""
        return self._by_key.get(key)

    def snapshot(self) -> tuple[list[Node], list[tuple[int, bytes]]]:
        """Every node and every (parent node id, name) entry the table holds now."""
        with self._lock:
            return list(self._by_id.values()), list(self._children)

    def child(self, parent: int, name: bytes) -> Node | None:
        nodeid = self._children.get((parent, name))
        return None if nodeid is None else self._by_id.get(nodeid)

    def resolve(self, path: str) -> tuple[Node | None, Node | None, bytes]:
        """For a mount path ("/a/b"): the node of its directory (if the table has it), its own node (if known)
        and its last component. The root is (None, root, b"")."""
        parts = [os.fsencode(p) for p in path.split("/") if p]
        if not parts:
            return None, self.root, b""
        node: Node | None = self.root
        for part in parts[:-1]:
            node = self.child(node.nodeid, part) if node is not None else None
            if node is None:
                return None, None, parts[-1]
        assert node is not None
        return node, self.child(node.nodeid, parts[-1]), parts[-1]

    def path(self, nodeid: int, name: bytes | None = None) -> str | None:
        """A path of the node (its most recent name, up to the root), or of `name` in it; None when no name
        is known (e.g. unlinked)."""
        parts: list[bytes] = [name] if name is not None else []
        with self._lock:
            while nodeid != ROOT_ID:
                node = self._by_id.get(nodeid)
                if node is None or not node.names or len(parts) > 4096:
                    return None
                nodeid, part = node.names[-1]
                parts.append(part)
        return "/" + "/".join(os.fsdecode(p) for p in reversed(parts))

    def close(self) -> None:
        """Close every fd but the root's (its owner closes it)."""
        with self._lock:
            nodes = [n for n in self._by_id.values() if n.nodeid != ROOT_ID]
            self._by_id = {ROOT_ID: self.root}
            self._by_key = {self.root.key: self.root}
            self._children.clear()
        for node in nodes:
            os.close(node.fd)
