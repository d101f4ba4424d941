"""The inode core's node table: one kernel inode per source object, keyed by the source's (st_dev, st_ino).

Each `Node` holds an O_PATH fd of its source object, so requests name objects by node id and never resolve a
path; hard links of one file are one node. The kernel counts the entry replies it got for a node (lookup,
create, mknod, mkdir, symlink, link, readdirplus entries) and gives them back with FORGET / BATCH_FORGET: at 0
the node's fd is closed and the node dropped, so the table holds what the kernel holds, not what was ever
touched. While the fd is open, the source inode cannot be freed, so its (st_dev, st_ino) cannot be reused; a
file whose last name goes through the mount while no handle is open is released at once (`unlinked`) and leaves
the keys.

Names: the table also keeps the (parent node, name) entries the kernel knows (from lookups, creates,
renames and unlinks), for a best-effort path (traces) and for turning a path the SOURCE watcher reports into
the (parent node, name) and node to invalidate.

File handles (name_to_handle_at through the mount, NFS): the kernel encodes (node id, generation) and, for a node
it no longer holds, sends LOOKUP(node id, "."). A node the kernel forgot leaves a compact record (its SOURCE file
handle, from name_to_handle_at), so that lookup can reopen the object (open_by_handle_at) under the same node id;
a later entry reply for the same object reuses that id too, so one object never has two. The records are
bounded (`FORGOTTEN_MAX`, oldest dropped first: its handles then give ESTALE). Node ids are never reused for
another object within a mount; the generation is random per mount (the root's is 0, as the kernel made it), so a
handle from an earlier mount whose node id now names another file gives ESTALE (1 chance in 2**32 otherwise).
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import stat
import struct
import sys
import threading

from . import syscalls

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsdecode's

ROOT_ID = 1
# Records of forgotten nodes kept for file handles: ~135 bytes each (tests/test_native_behaviour.py measures it),
# so at most ~9 MiB; beyond it the oldest go, and their handles give ESTALE.
FORGOTTEN_MAX = 65536
# Names the kernel may remember as absent for the long timeout (negative entries), recorded so that they can be
# invalidated when the SOURCE watcher loses events; beyond this many, absent names get the short timeout.
ABSENT_MAX = 65536
_RECORD = struct.Struct("=QQi")  # st_dev, st_ino, handle type; the handle's bytes follow
# The fds of directories removed through the mount, closed this many at a time once the kernel forgot them. The last
# close of a directory the SOURCE watcher marked frees its mark, and the kernel hands that to a workqueue: on this
# VM a wake-up of a worker on another, often halted, CPU for each (~12 us of the closing thread's time, one CPU);
# closed together, one wake-up serves a batch (docs/benchmarks.md, 2026-12-07 10:00).
DELETED_BATCH = 16


class Node:
    """One kernel inode. `lookups` and `opens` are changed under the table's lock only."""

    __slots__ = ("nodeid", "key", "fd", "generation", "lookups", "opens", "names", "kind", "backing_id",
                 "cached_path", "paths_below", "gone", "deleted", "watched", "pages", "absent", "caps_absent",
                 "xattrs_changed")

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
        self.cached_path: tuple[int, str] | None = None  # (the table's path epoch, the path) for traces
        # A directory: the path epoch in which a path below it was built on its own (NodeTable.path).
        self.paths_below = -1
        # A file whose last name went while no handle was open: its attributes then (`NodeTable.unlinked`).
        self.gone: os.stat_result | None = None
        # A directory removed through the mount (rmdir): its object is gone for good, so nothing reopens it by its
        # handle, and its fd may be closed later than the kernel's FORGET (DELETED_BATCH).
        self.deleted = False
        # A directory: time.monotonic_ns() when the SOURCE watcher began to see its entries change (0: it does
        # not). Replies made from a stat taken after that may carry the long timeouts.
        self.watched = 0
        # A regular file: (st_ctime_ns, st_mtime_ns, st_size) of the source file when the kernel's pages of it
        # were last dropped, if no change since can share that ctime; None: they must be dropped at the next open.
        self.pages: tuple[int, int, int] | None = None
        # A directory: names replied absent with the long timeout (NodeTable.absent), for `snapshot`.
        self.absent: set[bytes] | None = None
        # time.monotonic_ns() from when the object is known to have no "security.capability" (0: not known), and
        # when its extended attributes may last have changed (the watcher saw the object change, or the mount
        # set or removed one): the first tells only while it is the later (InodeOperations.getxattr).
        self.caps_absent = 0
        self.xattrs_changed = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR

    @property
    def proc(self) -> str:
        """The /proc/self/fd name of the node's fd, for calls that take only a path."""
        return f"/proc/self/fd/{self.fd}"


class NodeTable:
    """Thread-safe: libfuse serves requests from several threads."""

    def __init__(self, root_fd: int, handles_fd: int = -1) -> None:
        """`handles_fd`: an fd (not O_PATH) on SOURCE's filesystem to reopen forgotten nodes by their SOURCE file
        handle (open_by_handle_at needs CAP_DAC_READ_SEARCH); -1: forgotten nodes are not kept."""
        st = os.fstat(root_fd)
        root = Node(ROOT_ID, (st.st_dev, st.st_ino), root_fd, stat.S_IFDIR)
        root.lookups = 1  # the kernel never forgets the root
        self.root = root
        self._lock = threading.Lock()
        self._by_id: dict[int, Node] = {ROOT_ID: root}
        self._by_key: dict[tuple[int, int], Node] = {root.key: root}
        self._children: dict[tuple[int, bytes], int] = {}  # (parent id, name) -> node id
        self._names_in: collections.Counter[int] = collections.Counter()  # parent id -> its names in _children
        self._ids = itertools.count(ROOT_ID + 1)
        # Paths are cached per node (traces ask for one per event); a directory's name changing makes every cached
        # path below it stale, so it starts a new epoch instead of finding the descendants.
        self._path_epoch = 0
        # What a released node's fd number is pointed at (`unlinked`): an empty anonymous file, never a file of
        # SOURCE, so that a request racing with the release cannot reach another object by a reused fd number.
        self._released_fd = os.memfd_create("fuse-passthrough-released", os.MFD_CLOEXEC)
        # /proc/self/fd, for `reopen`: a name looked up there is one component, not four (~2 us less per open).
        self._proc_fds = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # Held while the daemon has a file of SOURCE open outside any request (`read_byte`; the watcher's
        # open_by_handle_at): `unlinked` waits for it, so that the file's space is free when the unlink returns
        # even if the watcher was reading it or looking it up.
        self.outside_requests = threading.Lock()
        # Held around the daemon's rmdir (InodeOperations.rmdir) and the close of a directory node's fd (`forget`):
        # the kernel's removal of a directory and the last close of its removed child's fd, run at once by two
        # workers (rm -r: the child's FORGET comes as the parent's RMDIR does), stalled both for 2-4 ms here
        # (docs/benchmarks.md, 2026-12-06 10:00).
        self.removing_directories = threading.Lock()
        self.generation = int.from_bytes(os.urandom(4), "little") or 1  # of every node but the root
        self.handles_fd = handles_fd
        self._forgotten: dict[int, bytes] = {}  # node id -> _RECORD + handle, oldest first
        self._forgotten_ino: dict[int, int] = {}  # st_ino -> node id, for the same object's next entry
        self._absent = 0  # names recorded in the nodes' `absent` sets
        self._deleted_fds: list[int] = []  # of forgotten directories removed through the mount, not closed yet
        # Set when the table grows past `crowded` nodes (each an open fd): NodeBudget asks the kernel to forget some.
        self.crowded = 0
        self.on_crowded: threading.Event | None = None

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
                nodeid = self._forgotten_id_locked(key, fd) if self._forgotten_ino else None
                node = Node(nodeid or next(self._ids), key, fd, stat.S_IFMT(st.st_mode))
                node.generation = self.generation
                self._by_key[key] = node
                self._by_id[node.nodeid] = node
                fd = -1
                if self.crowded and len(self._by_id) > self.crowded and self.on_crowded is not None:
                    self.on_crowded.set()
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
            if self.handles_fd != -1 and node.key[0] == self.root.key[0] and node.gone is None and not node.deleted:
                self._remember_locked(node)
            del self._by_id[nodeid]
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]
            for entry in node.names:
                if self._children.get(entry) == nodeid:
                    del self._children[entry]
                    self._name_gone_locked(entry[0])
            node.names.clear()
            if node.absent:  # the kernel's negative entries under a directory go with it
                self._absent -= len(node.absent)
                node.absent = None
            self._renamed_locked(node)
            closing = [node.fd]
            if node.deleted:  # a batch at a time (DELETED_BATCH)
                self._deleted_fds.append(node.fd)
                closing = []
                if len(self._deleted_fds) >= DELETED_BATCH:
                    closing, self._deleted_fds = self._deleted_fds, []
        if node.kind == stat.S_IFDIR:
            if closing:
                with self.removing_directories:
                    for fd in closing:
                        os.close(fd)
        else:  # quick: a file unlinked through the mount had its fd closed then (`unlinked`); this close frees a
            # file only where it was deleted in SOURCE behind the mount's back
            syscalls.close_keeping_gil(node.fd)

    def unlinked(self, node: Node) -> None:
        """One of `node`'s names went in SOURCE (unlink, or a rename over it). If it was the file's last and no
        handle is open, SOURCE frees the file now, as natively, not when the kernel's FORGET comes (a full disk
        has its space back at once): the node's fd goes, and its attributes stay those it had (nothing can
        change a file without names or handles)."""
        with self._lock:
            if node.opens or node.gone is not None or node.kind == stat.S_IFDIR or node.nodeid not in self._by_id:
                return
            try:
                st = os.fstat(node.fd)
            except OSError:
                return
            if st.st_nlink:
                return
            node.gone = st
            with self.outside_requests:  # no other fd of the daemon's holds the file once this returns
                os.dup2(self._released_fd, node.fd, inheritable=False)  # closes the file's fd, keeps the number
            # SOURCE may give its inode number to a new file now: that is another object, another node.
            if self._by_key.get(node.key) is node:
                del self._by_key[node.key]

    def reopen(self, fd: int, flags: int) -> int:
        """A new open, with `flags`, of the object `fd` refers to (an O_PATH fd included): its /proc/self/fd link,
        followed."""
        return os.open(str(fd), flags, dir_fd=self._proc_fds)

    def read_byte(self, node: Node, offset: int) -> bytes:
        """The byte of `node`'s file at `offset` (b"" past its end, or if it cannot be opened), read through a
        descriptor of its own that `unlinked` waits for (the watcher: SOURCE's new size, for O_APPEND)."""
        with self.outside_requests:
            try:
                fd = self.reopen(node.fd, os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC)
            except OSError:
                return b""
            try:
                return os.pread(fd, 1, offset)
            except OSError:
                return b""
            finally:
                os.close(fd)

    # -- forgotten nodes (file handles)
    def _remember_locked(self, node: Node) -> None:
        """Keep what reopens a node the kernel forgot (under the lock: its object must not get another node id
        in between)."""
        try:
            htype, handle, _ = syscalls.name_to_handle_at(node.fd)
        except OSError:  # EOPNOTSUPP, EOVERFLOW: a filesystem without (small) handles
            return
        while len(self._forgotten) >= FORGOTTEN_MAX:
            # The oldest in a batch: a dict's first item sits behind every slot deleted since its last resize, so
            # dropping them one at a time made each FORGET at the bound scan thousands (docs/benchmarks.md,
            # 2026-12-06 12:30); a batch scans them once.
            for oldest in list(itertools.islice(self._forgotten, max(1, FORGOTTEN_MAX // 64))):
                self._drop_record_locked(oldest, self._forgotten[oldest])
        self._forgotten[node.nodeid] = _RECORD.pack(*node.key, htype) + handle
        self._forgotten_ino[node.key[1]] = node.nodeid

    def _drop_record_locked(self, nodeid: int, record: bytes) -> None:
        del self._forgotten[nodeid]
        ino = _RECORD.unpack_from(record)[1]
        if self._forgotten_ino.get(ino) == nodeid:
            del self._forgotten_ino[ino]

    def _forgotten_id_locked(self, key: tuple[int, int], fd: int) -> int | None:
        """The node id `key`'s object had when the kernel forgot it, if it is the same object (its handle is
        the same: an inode number reused by a new file has another generation in it)."""
        nodeid = self._forgotten_ino.get(key[1])
        if nodeid is None:
            return None
        record = self._forgotten[nodeid]
        self._drop_record_locked(nodeid, record)
        dev, ino, htype = _RECORD.unpack_from(record)
        try:
            same = (dev, ino) == key and syscalls.name_to_handle_at(fd)[:2] == (htype, record[_RECORD.size:])
        except OSError:
            same = False
        return nodeid if same else None

    def revive(self, nodeid: int) -> tuple[Node, int | None]:
        """For LOOKUP(nodeid, "."): the node, with one more lookup, whether the kernel holds it or forgot it
        (then reopened from its record); and the new fd to check when it was reopened (else None). ESTALE when
        the node id is unknown or its object is gone."""
        with self._lock:
            node = self._by_id.get(nodeid)
            if node is not None:
                node.lookups += 1
                return node, None
            record = self._forgotten.get(nodeid)
        if record is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        dev, ino, htype = _RECORD.unpack_from(record)
        fd = syscalls.open_by_handle_at(self.handles_fd, htype, record[_RECORD.size:],
                                        os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        with self._lock:
            node = self._by_id.get(nodeid)
            if node is None and (st.st_dev, st.st_ino) == (dev, ino) and (dev, ino) not in self._by_key \
                    and self._forgotten.get(nodeid) == record:
                self._drop_record_locked(nodeid, record)
                node = Node(nodeid, (dev, ino), fd, stat.S_IFMT(st.st_mode))
                node.generation = self.generation
                self._by_key[node.key] = node
                self._by_id[nodeid] = node
                node.lookups = 1
                return node, fd
            if node is not None:  # another LOOKUP(nodeid, ".") won the race
                node.lookups += 1
        os.close(fd)
        if node is None:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return node, None

    def forgotten(self) -> int:
        """How many forgotten nodes are kept for file handles."""
        return len(self._forgotten)

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
            if node.names and node.names[-1] == entry:  # the common case: a name looked up again
                return
            if entry in node.names:
                node.names.remove(entry)
            node.names.append(entry)
            self._renamed_locked(node)
            return
        if old is not None:
            self._unname_locked(parent, name)
        else:
            p = self._by_id.get(parent)
            if p is not None and p.absent and name in p.absent:
                p.absent.discard(name)
                self._absent -= 1
        self._children[entry] = node.nodeid
        self._names_in[parent] += 1
        node.names.append(entry)
        self._renamed_locked(node)

    def _renamed_locked(self, node: Node) -> None:
        """`node`'s most recent name may have changed: its cached path goes, and if a path cached since is built
        on it, every cached path does (a new epoch). None can be when no name is in it any more (the name that
        went took its node's cached path with it): so a directory made, or removed or forgotten once empty,
        leaves the other cached paths alone (a 500-level chain made or removed costs one step per path asked
        for, not a walk up every level)."""
        node.cached_path = None
        if node.paths_below == self._path_epoch and node.nodeid in self._names_in:
            self._path_epoch += 1

    def _name_gone_locked(self, parent: int) -> None:
        left = self._names_in[parent] - 1
        if left:
            self._names_in[parent] = left
        else:
            del self._names_in[parent]

    def _unname_locked(self, parent: int, name: bytes) -> int | None:
        nodeid = self._children.pop((parent, name), None)
        if nodeid is not None:
            self._name_gone_locked(parent)
            node = self._by_id.get(nodeid)
            if node is not None and (parent, name) in node.names:
                node.names.remove((parent, name))
                self._renamed_locked(node)
        return nodeid

    def removed(self, parent: int, name: bytes, directory: bool = False) -> None:
        """`name` was unlinked from `parent`, or with `directory` removed (rmdir: its object is gone for good)."""
        with self._lock:
            nodeid = self._unname_locked(parent, name)
            node = self._by_id.get(nodeid) if directory and nodeid is not None else None
            if node is not None and node.kind == stat.S_IFDIR:
                node.deleted = True

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

    def find_id(self, nodeid: int) -> Node | None:
        """The node with this id, if the kernel holds it."""
        return self._by_id.get(nodeid)

    def find_key(self, key: tuple[int, int]) -> Node | None:
        """The node of the source object with this (st_dev, st_ino), if the kernel holds one."""
        return self._by_key.get(key)

    def absent(self, parent: int, name: bytes) -> bool:
        """Record that `name` was replied absent from `parent` (a negative entry the kernel may keep); False when
        it cannot be (`parent` unknown, or ABSENT_MAX names recorded): then it must not be kept for long."""
        with self._lock:
            node = self._by_id.get(parent)
            if node is None:
                return False
            if node.absent is None:
                node.absent = set()
            elif name in node.absent:
                return True
            if self._absent >= ABSENT_MAX:
                return False
            node.absent.add(name)
            self._absent += 1
            return True

    def idle_entries(self, count: int) -> list[tuple[int, bytes]]:
        """The (parent, name) of up to `count` of the oldest nodes (by node id: looked up first) with no open
        handle, for the kernel to forget."""
        with self._lock:
            found: list[tuple[int, bytes]] = []
            for node in self._by_id.values():  # in insertion order: the oldest first
                if node.nodeid != ROOT_ID and not node.opens and node.names:
                    found.append(node.names[-1])
                    if len(found) >= count:
                        break
            return found

    def snapshot(self) -> tuple[list[Node], list[tuple[int, bytes]]]:
        """Every node and every (parent node id, name) entry the table holds now, names recorded absent
        included."""
        with self._lock:
            nodes = list(self._by_id.values())
            return nodes, [*self._children, *((n.nodeid, name) for n in nodes if n.absent for name in n.absent)]

    def child(self, parent: int, name: bytes) -> Node | None:
        nodeid = self._children.get((parent, name))
        return None if nodeid is None else self._by_id.get(nodeid)

    def path_cache(self) -> tuple[NodeTable, int]:
        """(this table, the root's id) for the compiled tracing layer (tracing/_recorder.c), which reads what `path`
        reads without the lock before asking it: "/" for the root, else `_by_id[nodeid].cached_path` while it is
        `(_path_epoch, path)`."""
        return self, ROOT_ID

    def path(self, nodeid: int, name: bytes | None = None) -> str | None:
        """A path of the node (its most recent name, up to the root), or of `name` in it; None when no name
        is known (e.g. unlinked)."""
        # Read without the lock where it is one step (every traced request asks): a path cached in this epoch, no
        # name (unlinked, forgotten: the FORGET after every unlink), or a name in a directory whose path is cached.
        # The lock orders only the steps of a change (names, cached paths and epoch are each replaced, never changed
        # in place), so this reads the path as it was just before or just after a concurrent rename; only a path
        # built under the lock is cached (one built here could outlive the rename it raced).
        node = self._by_id.get(nodeid)
        base: str | None
        if node is None:
            base = None
        elif (cached := node.cached_path) is not None and cached[0] == self._path_epoch:
            base = cached[1]
        elif nodeid == ROOT_ID:
            base = "/"
        elif not (names := node.names):
            base = None
        elif (up := self._one_step(*names[-1])) is not None:
            base = up
        else:
            with self._lock:
                base = self._path_locked(nodeid)
        if base is None or name is None:
            return base
        return ("/" if base == "/" else base + "/") + name.decode(_FS_ENCODING, _FS_ERRORS)

    def _one_step(self, parent: int, name: bytes) -> str | None:
        """parent's path + name while parent's path is "/" or cached in this epoch, else None."""
        if parent == ROOT_ID:
            return "/" + name.decode(_FS_ENCODING, _FS_ERRORS)
        up = self._by_id.get(parent)
        cached = up.cached_path if up is not None else None
        if cached is None or cached[0] != self._path_epoch:
            return None
        return cached[1] + "/" + name.decode(_FS_ENCODING, _FS_ERRORS)

    def _path_locked(self, nodeid: int) -> str | None:
        if nodeid == ROOT_ID:
            return "/"
        node = self._by_id.get(nodeid)
        if node is None:
            return None
        epoch = self._path_epoch
        if node.cached_path is not None and node.cached_path[0] == epoch:
            return node.cached_path[1]
        below: list[Node] = []  # from `node` up to the first ancestor with a path
        base = "/"
        while True:
            if not node.names or len(below) > 4096:
                return None
            below.append(node)
            parent = node.names[-1][0]
            if parent == ROOT_ID:
                break
            up = self._by_id.get(parent)
            if up is None:
                return None
            if up.cached_path is not None and up.cached_path[0] == epoch:
                base = up.cached_path[1]
                up.paths_below = epoch
                break
            node = up
        for n in reversed(below):
            base = ("/" if base == "/" else base + "/") + os.fsdecode(n.names[-1][1])
            n.cached_path = (epoch, base)
            if n is not below[0]:  # the path of the next one down was built on this one
                n.paths_below = epoch
        return base

    def close(self) -> None:
        """Close every fd but the root's (its owner closes it)."""
        with self._lock:
            nodes = [n for n in self._by_id.values() if n.nodeid != ROOT_ID]
            self._by_id = {ROOT_ID: self.root}
            self._by_key = {self.root.key: self.root}
            self._children.clear()
            self._names_in.clear()
        for node in nodes:
            os.close(node.fd)
        for fd in self._deleted_fds:
            os.close(fd)
        self._deleted_fds = []
        os.close(self._released_fd)
        os.close(self._proc_fds)
