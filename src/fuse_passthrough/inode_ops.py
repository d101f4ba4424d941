"""The inode core: every FUSE low-level operation as a short method over fd-relative syscalls on SOURCE.

Requests name objects by node id (inodes.py): each is an O_PATH fd, so nothing is resolved by path and the last
component of a name is never followed (O_NOFOLLOW; the kernel resolves symlinks itself). Calls that take only a
path use the node's /proc/self/fd name; opens reopen its fd through that link (NodeTable.reopen). Open files are
plain fds (fi.fh). Directories are opened without a handle of ours where nothing depends on their open
(`dir_handles` False: the kernel sends no OPENDIR/RELEASEDIR and keeps listings, which the watcher's invalidations
drop). Readdir offsets are hashes of the names, so a reader goes on correctly in any listing read since
(`_read_listing`).
Otherwise an open directory is a handle with its listing and an fd opened when first needed (`_DirHandle`). Objects
are created, and permission-sensitive changes made, with the caller's credentials when running as root
(credentials.py, given the low-level request's context).

Handlers follow lowlevel/binding.py: they return the reply's value or raise OSError. This module knows nothing
about tracing or faults (layers wrap it: chain.py).
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import itertools
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import syscalls
from .credentials import CallerCredentials, kills_privileges
from .inodes import ROOT_ID, Node, NodeTable
from .lowlevel import abi
from .lowlevel import binding as ll

_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# Not passed on: O_DIRECT (data is copied through unaligned Python buffers; the reply sets direct_io instead, so
# the mount's page cache is bypassed as asked), O_NOFOLLOW (a /proc/self/fd name is a link to follow; create
# adds it back), and what only the kernel's own open handles. create keeps O_EXCL: a name made in SOURCE since
# the kernel's lookup must fail it with EEXIST.
_OPEN_CLEAR = ~(os.O_DIRECT | os.O_NOFOLLOW | os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
_CREATE_CLEAR = ~(os.O_DIRECT | os.O_NOFOLLOW | os.O_NOCTTY)
_ROOT_UID = 0
_CAPABILITY = b"security.capability"  # file capabilities: what the kernel asks for before a write (kill-priv)
# The kernel's open flag of an open for execve/uselib (include/linux/fs.h __FMODE_EXEC; FUSE passes f_flags on).
_FMODE_EXEC = 0x20
# How far a file's ctime must lie behind the moment it was read for no later change to share that ctime: the
# kernel stamps changes from a clock that lags ours by up to one tick (10 ms at HZ=100). Whole-second ctimes
# say the filesystem keeps seconds only (ext4 with 128-byte inodes...): a second then, with room to spare.
_SETTLED_NS = 20_000_000
_SETTLED_SECONDS_NS = 2_000_000_000


# How a device's pages may be kept (InodeOperations._keeping): never (another machine may change its files);
# while unchanged (SOURCE mounted noatime or read-only); while unchanged and a read would not update the atime
# (relatime: atime after mtime and ctime, and less than a day old); never when every read must reach SOURCE to
# update the atime (strictatime). The mount's own noatime (which remount may change) makes the last two "while
# unchanged".
_KEEP_NEVER, _KEEP_ALWAYS, _KEEP_RELATIME, _KEEP_STRICTATIME = 0, 1, 2, 3
# statfs f_type of the filesystems whose regular files have no flush operation: close() there cannot fail or do
# anything (ext4 with ext2/3, xfs, btrfs, tmpfs). NFS, CIFS, FUSE, overlayfs, f2fs have one.
_FLUSHLESS_FILESYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994})
_DAY_NS = 86400 * 1_000_000_000


def settled(st: os.stat_result, now_ns: int) -> bool:
    """No change after `st` was read (at `now_ns`, realtime) can leave st_ctime_ns as it is."""
    margin = _SETTLED_SECONDS_NS if st.st_ctime_ns % 1_000_000_000 == 0 else _SETTLED_NS
    return now_ns - st.st_ctime_ns >= margin


def _type_bits(entry: os.DirEntry[str]) -> int:
    """st_mode type bits from d_type, without a stat unless the type is uncommon."""
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    if entry.is_symlink():
        return stat.S_IFLNK
    try:
        return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return 0


def _statvfs(sv: os.statvfs_result) -> abi.statvfs_t:
    out = ll.StatVfs()
    out.f_bsize, out.f_frsize, out.f_blocks, out.f_bfree = sv.f_bsize, sv.f_frsize, sv.f_blocks, sv.f_bfree
    out.f_bavail, out.f_files, out.f_ffree, out.f_favail = sv.f_bavail, sv.f_files, sv.f_ffree, sv.f_favail
    out.f_fsid, out.f_flag, out.f_namemax = sv.f_fsid, sv.f_flag, sv.f_namemax
    return out


class _DirHandle:
    """An open directory (fi.fh is its number). Most opens list nothing the kernel has not kept (cache_readdir)
    or only serve as a dirfd in the caller's process, so the directory's own fd is opened at the first readdir
    or fsyncdir, when the open needs no permission check of ours (`InodeOperations.opendir`)."""

    __slots__ = ("node", "fd", "listing")

    def __init__(self, node: Node, fd: int) -> None:
        self.node = node
        self.fd = fd  # -1 until needed
        self.listing: Listing | None = None


# Listings kept for readdirs without a handle, until read to their end, at most (the oldest go first): the
# directories, and their entries in all.
_LISTINGS_KEPT = 512
_LISTED_ENTRIES_KEPT = 100_000
_OFFSET_MASK = (1 << 62) - 1
# (offsets, entries): the entries (name, d_ino, type bits) in the order of their offsets
Listing = tuple[list[int], list[tuple[bytes, int, int]]]


def _read_listing(fd: int) -> Listing:
    """The directory open as `fd`: "." and ".." at offsets 1 and 2, then each name at an offset made from a hash
    of the name (this daemon's), in that order, as ext4 orders by hash. A reader that goes on after an offset
    is given every name still there that it has not had, once, from any listing read since, however the
    directory changed: offsets are not positions in one listing. (Hashes that collide: the later name takes the
    next free offset.)"""
    st = os.fstat(fd)
    if st.st_nlink == 0:  # removed while open: lists nothing, not even "." and "..", as natively
        return [], []
    with os.scandir(fd) as it:  # scandir(fd) rewinds the shared descriptor when closed
        named = sorted((max(3, hash(name) & _OFFSET_MASK), name, e.inode(), _type_bits(e))
                       for e in it for name in (os.fsencode(e.name),))
    offsets = [1, 2]
    entries = [(b".", st.st_ino, stat.S_IFDIR), (b"..", os.stat("..", dir_fd=fd).st_ino, stat.S_IFDIR)]
    last = 2
    for off, name, ino, kind in named:
        last = off if off > last else last + 1
        offsets.append(last)
        entries.append((name, ino, kind))
    return offsets, entries


def _set_noatime(fd: int) -> None:
    """O_NOATIME on an fd opened as the caller: set as the daemon (owner or CAP_FOWNER), where it may."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NOATIME)
    except OSError:  # EPERM: a daemon not running as root, on a file it does not own
        pass


def _handles_fd(source: str) -> int:
    """An fd for open_by_handle_at on SOURCE's filesystem (it takes no O_PATH fd), where the daemon may use it
    (CAP_DAC_READ_SEARCH: as root); else -1 and forgotten nodes are not kept (inodes.py)."""
    if os.geteuid() != _ROOT_UID:
        return -1
    try:
        return os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


class _CallerUmask:
    """The caller's credentials and, when `umask` >= 0, its umask in this thread (which has its own: `thread`).
    The umask stays set after the call (the next create's caller most often has the same one: no umask calls);
    nothing else a worker thread does creates files."""

    __slots__ = ("creds", "umask", "thread")

    def __init__(self, creds: CallerCredentials, umask: int, thread: threading.local) -> None:
        self.creds, self.umask, self.thread = creds, umask, thread

    def __enter__(self) -> None:
        if self.umask >= 0 and self.thread.umask != self.umask:
            os.umask(self.umask)
            self.thread.umask = self.umask
        self.creds.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.creds.__exit__(None, None, None)


class InodeOperations:
    """Mirror `source` on the low-level API (a `LowLevelSession`'s operations).

    Timeouts are the kernel's cache lifetimes put in every entry and attribute reply (0: strict). With
    `kernel_passthrough` (libfuse >= 3.17), regular files are opened with a backing id, one per node, shared by
    its opens and closed with the last release (as libfuse's passthrough_hp.cc).
    """

    def __init__(self, source: str, *, attr_timeout: float = 1.0, entry_timeout: float = 1.0,
                 negative_timeout: float = 0.0, kernel_passthrough: bool = False, direct_io: bool = False,
                 keep_cache: bool = False, auto_cache: bool = True, caller_credentials: bool | None = None,
                 posix_acl: bool = True, noatime: bool = False, nodiratime: bool = False,
                 dir_handles: bool = True, flushes: bool = True) -> None:
        self.source = os.path.realpath(source)
        self.nodes = NodeTable(os.open(self.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC),
                               _handles_fd(self.source))
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.negative_timeout = negative_timeout
        # Absent names may carry the long timeout too (no negative_timeout given; set by inode_mount.serve).
        self.long_negative = False
        # Where the SOURCE watcher sees every change: `long_timeout` (0: never) for the replies about objects of
        # the devices in `trusted` (st_dev -> time.monotonic_ns() from when it saw them), made from a stat taken
        # after that time (and, for a directory's attributes and entries, after its own mark: Node.watched).
        self.long_timeout = 0.0
        self.trusted: dict[int, int] = {}
        self.direct_io = direct_io
        self.keep_cache = keep_cache  # -o kernel_cache: keep pages at every open
        self.auto_cache = auto_cache  # keep them while the file is unchanged (Node.pages)
        self._keeping: dict[int, int] = {}  # st_dev -> _KEEP_*: when its files' pages may be kept
        # False: writable files of a filesystem whose close() does nothing are opened with FOPEN_NOFLUSH.
        self.flushes = flushes
        self._flushless: dict[int, bool] = {}  # st_dev -> whether close() there does nothing
        self.want_passthrough = kernel_passthrough
        self.passthrough = False  # the kernel accepted it (init)
        self.passthrough_refused: str | None = None  # why not, when it was asked for
        self.want_posix_acl = posix_acl  # ask for FUSE_CAP_POSIX_ACL (it forces default_permissions)
        self.posix_acl = False
        self.dont_mask = False  # FUSE_CAP_DONT_MASK: the caller's umask is ours to apply (per worker thread)
        self._thread_fs = threading.local()
        # -o noatime / nodiratime: our opens of SOURCE do not update atimes (O_NOATIME, set as the daemon). The
        # kernel never updates a FUSE inode's atime itself (S_NOATIME): SOURCE's reads are the only ones.
        self.noatime = noatime
        self.nodiratime = noatime or nodiratime
        self._backing_lock = threading.Lock()
        self._request = threading.local()
        self.as_caller = CallerCredentials(caller_credentials, context=self._caller_context,
                                           caller_groups=self._caller_groups)
        self.as_caller_ids = CallerCredentials(caller_credentials, groups=False, context=self._caller_context,
                                               caller_groups=self._caller_groups)
        self._dirs: dict[int, _DirHandle] = {}  # open directories by fi.fh
        self._dir_numbers = itertools.count(1)
        # False: no OPENDIR/RELEASEDIR (FUSE_CAP_NO_OPENDIR_SUPPORT, asked for at init); only where the open needs
        # no permission check of ours and the kernel's kept listings are dropped when SOURCE changes (serve()).
        self.dir_handles = dir_handles
        # Without handles: each directory's last listing, read again at offset 0 (by node id; oldest out first),
        # dropped when a reader reaches its end; `_listed` entries in all.
        self._listings: dict[int, Listing] = {}
        self._listed = 0
        self._listings_lock = threading.Lock()
        # As root, a caller with the daemon's own ids could open any directory: its open needs no check here.
        self._root = os.geteuid() == _ROOT_UID
        # Called with each directory node the kernel learns (the SOURCE watcher watches it).
        self.on_directory: Callable[[Node], None] | None = None
        self.on_init: Callable[[], None] | None = None
        self.on_destroy: Callable[[], None] | None = None  # before the session goes (the watcher stops)

    # -- the caller ---------------------------------------------------------------------------------------------
    def _caller_context(self) -> tuple[int, int, int, int]:
        return ll.caller(self._request.req)

    def _caller_groups(self) -> list[int] | None:
        return ll.req_groups(self._request.req)

    def _as_caller(self, req: int) -> CallerCredentials:
        self._request.req = req
        return self.as_caller

    def _as_caller_ids(self, req: int) -> CallerCredentials:
        self._request.req = req
        return self.as_caller_ids

    # -- entries ------------------------------------------------------------------------------------------------
    def _attr_timeout(self, node: Node, t0: int) -> float:
        """For attributes read after `t0` (time.monotonic_ns())."""
        if self._object_watched(node, t0) and (node.kind != stat.S_IFDIR or 0 < node.watched <= t0):
            return self.long_timeout
        return self.attr_timeout

    def _object_watched(self, node: Node, t0: int) -> bool:
        """Whether the watcher reports every change of `node`'s object made after `t0`, by any name (its
        filesystem mark), and may let the kernel keep what was read then for the long timeout."""
        return bool(self.long_timeout) and 0 < self.trusted.get(node.key[0], 0) <= t0

    def _entry_timeout(self, parent: Node | None, t0: int) -> float:
        """For a name found in `parent` after `t0` (None: no name of a watched directory, e.g. LOOKUP(node, "."))."""
        if self.long_timeout and parent is not None and self._names_watched(parent, t0):
            return self.long_timeout
        return self.entry_timeout

    def _names_watched(self, parent: Node, t0: int) -> bool:
        """Whether the watcher saw every change of `parent`'s names since before `t0`."""
        return 0 < self.trusted.get(parent.key[0], 0) <= t0 and 0 < parent.watched <= t0

    def _entry(self, node: Node, st: os.stat_result, parent: Node | None, t0: int) -> abi.fuse_entry_param:
        return ll.entry_from(node.nodeid, st, self._attr_timeout(node, t0), self._entry_timeout(parent, t0),
                             node.generation)

    def _lookup(self, parent: int, name: bytes) -> abi.fuse_entry_param:
        """Find `name` in `parent` and count one entry reply for it."""
        pnode = self.nodes.get(parent)
        t0 = time.monotonic_ns()
        fd = os.open(name, _PATH_FLAGS, dir_fd=pnode.fd)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        node = self.nodes.enter(parent, name, fd, st)
        if node.is_dir and not node.watched and self.on_directory is not None:
            self.on_directory(node)  # watched from now on (where it can be): its attributes read again after
            t0 = time.monotonic_ns()
            st = os.fstat(node.fd)
        return self._entry(node, st, pnode, t0)

    def _lookup_dot(self, nodeid: int, name: bytes) -> abi.fuse_entry_param:
        """The kernel's export support (file handles, NFS), never a path walk: LOOKUP(node, ".") for a node it
        no longer holds (the node table reopens a forgotten one from its record) and LOOKUP(dir, "..") for a
        directory's parent, which must not lead out of SOURCE."""
        if name == b".":
            node, fd = self.nodes.revive(nodeid)
            try:
                if fd is not None and node.is_dir and not self._beneath(fd):
                    raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
                if node.is_dir and not node.watched and self.on_directory is not None:
                    self.on_directory(node)
                t0 = time.monotonic_ns()
                st = os.fstat(node.fd)
                if st.st_nlink == 0 and not node.opens and not node.is_dir:
                    # Unlinked and open nowhere through the mount: its FORGET is on the way (a worker may not
                    # have served it yet). A file handle of a deleted file is stale, as on ext4.
                    raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            except BaseException:
                self.nodes.forget(node.nodeid, 1)
                raise
            return self._entry(node, st, None, t0)
        node = self.nodes.get(nodeid)
        fd = os.open("." if nodeid == ROOT_ID else "..", _PATH_FLAGS, dir_fd=node.fd)
        try:
            if not self._beneath(fd):
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            t0 = time.monotonic_ns()
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        found = self.nodes.enter(nodeid, None, fd, st)
        if not found.watched and self.on_directory is not None:
            self.on_directory(found)  # as _lookup: its attributes read again after
            t0 = time.monotonic_ns()
            st = os.fstat(found.fd)
        return self._entry(found, st, None, t0)

    def _beneath(self, fd: int) -> bool:
        """Whether the directory `fd` is SOURCE or inside it (one moved out of SOURCE behind the mount's back is
        not): its ".." chain reaches SOURCE's root before its filesystem's."""
        root, opened = self.nodes.root.key, list[int]()
        try:
            st = os.fstat(fd)
            for _ in range(4096):
                if (st.st_dev, st.st_ino) == root:
                    return True
                opened.append(os.open("..", _PATH_FLAGS, dir_fd=opened[-1] if opened else fd))
                up = os.fstat(opened[-1])
                if (up.st_dev, up.st_ino) == (st.st_dev, st.st_ino):
                    return False
                st = up
            return False
        finally:
            for o in opened:
                os.close(o)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def init(self, conn: Any) -> None:
        # Without FUSE_CAP_DONT_MASK the kernel applies the caller's umask before sending a mode; ours must not
        # mask it a second time. With it, each worker thread has a umask of its own (unshare(CLONE_FS)), set to
        # the caller's for each create (when it differs from the last one), so SOURCE's filesystem applies it only
        # where the parent has no default ACL, as natively.
        os.umask(0)
        capable = conn.capable_ext if ll.VERSION >= (3, 17) else conn.capable
        want = 0
        if capable & abi.FUSE_CAP_DONT_MASK:
            try:
                self._own_fs()
                want |= abi.FUSE_CAP_DONT_MASK
                self.dont_mask = True
            except OSError as e:
                print(f"fuse-passthrough: no per-thread umask ({e.strerror}): the kernel applies the umask, also "
                      "under default ACLs", file=sys.stderr)
        if self.want_posix_acl and capable & abi.FUSE_CAP_POSIX_ACL:
            want |= abi.FUSE_CAP_POSIX_ACL  # the kernel enforces and caches ACLs (it reads them as xattrs)
            self.posix_acl = True
        if capable & abi.FUSE_CAP_EXPORT_SUPPORT:  # file handles: LOOKUP of "." and ".." (_lookup_dot)
            want |= abi.FUSE_CAP_EXPORT_SUPPORT
        if capable & abi.FUSE_CAP_DIRECT_IO_ALLOW_MMAP:  # libfuse >= 3.17 (3.14 never offers it)
            want |= abi.FUSE_CAP_DIRECT_IO_ALLOW_MMAP  # files opened with direct_io may still be mmapped
        # Not with kernel passthrough: the kernel writes the backing file with the daemon's credentials there.
        writes_as_caller = (self.as_caller.enabled or os.geteuid() != 0) and not self.want_passthrough
        if capable & abi.FUSE_CAP_HANDLE_KILLPRIV_V2 and writes_as_caller:
            # Clearing setuid/setgid bits and file capabilities on writes, truncates and O_TRUNC opens is ours:
            # each is done as the caller, so SOURCE's filesystem clears them as it would for the caller. The
            # kernel then marks the mount SB_NOSEC and asks getxattr("security.capability") once per inode
            # instead of before every write. (libfuse < 3.17 offers it through the binding's own I/O.)
            want |= abi.FUSE_CAP_HANDLE_KILLPRIV_V2
        if not self.dir_handles and capable & abi.FUSE_CAP_NO_OPENDIR_SUPPORT:
            # The first OPENDIR's ENOSYS tells the kernel to open directories itself from then on: no OPENDIR or
            # RELEASEDIR request, and listings kept in its cache (checked against the directory's mtime).
            want |= abi.FUSE_CAP_NO_OPENDIR_SUPPORT
        else:
            self.dir_handles = True
        if ll.VERSION >= (3, 17):  # setting both want and want_ext is an error there
            conn.want_ext |= want
        else:
            conn.want |= want
        if self.want_passthrough:
            if ll.VERSION < (3, 17) or not conn.capable_ext & ll.FUSE_CAP_PASSTHROUGH:
                self.passthrough_refused = ("--passthrough: the kernel does not offer FUSE passthrough (needs "
                                            "Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)")
            else:
                conn.want_ext |= ll.FUSE_CAP_PASSTHROUGH
                # The source may itself be on overlayfs or another passthrough FUSE mount.
                conn.max_backing_stack_depth = ll.FUSE_BACKING_STACKED_OVER
                self.passthrough = True
        if self.on_init is not None:
            self.on_init()

    def _own_fs(self) -> None:
        """Give the calling worker thread its own umask (once)."""
        if not getattr(self._thread_fs, "own", False):
            syscalls.unshare(syscalls.CLONE_FS)
            os.umask(0)
            self._thread_fs.umask = 0
            self._thread_fs.own = True

    def _creating(self, req: int) -> _CallerUmask:
        """Context of a create, mkdir, mknod or tmpfile: the caller's credentials, and with DONT_MASK its
        umask."""
        self._request.req = req
        if not self.dont_mask:
            return _CallerUmask(self.as_caller, -1, self._thread_fs)
        self._own_fs()
        return _CallerUmask(self.as_caller, ll.caller(req)[3], self._thread_fs)

    def destroy(self) -> None:
        if self.on_destroy is not None:
            self.on_destroy()

    def close(self) -> None:
        for handle in self._dirs.values():
            if handle.fd != -1:
                os.close(handle.fd)
        self._dirs.clear()
        self.nodes.close()
        os.close(self.nodes.root.fd)
        if self.nodes.handles_fd != -1:
            os.close(self.nodes.handles_fd)

    # -- names --------------------------------------------------------------------------------------------------
    def lookup(self, req: int, parent: int, name: bytes) -> abi.fuse_entry_param:
        if name == b"." or name == b"..":
            return self._lookup_dot(parent, name)
        t0 = time.monotonic_ns()
        try:
            return self._lookup(parent, name)
        except FileNotFoundError:
            timeout = self._negative_timeout(parent, name, t0)
            if timeout > 0:  # a negative entry: the kernel remembers that the name is absent
                raise ll.NegativeEntry(timeout) from None
            raise

    def _negative_timeout(self, parent: int, name: bytes, t0: int) -> float:
        """How long the kernel may remember `name` as absent from `parent` (found so after `t0`): the long timeout
        where the watcher will see the name appear (its notify_inval_entry drops the negative entry) and the table
        could record the name (to invalidate it if the watcher loses events); else `negative_timeout`."""
        if self.long_negative and self.long_timeout:
            pnode = self.nodes.find_id(parent)
            if pnode is not None and self._names_watched(pnode, t0) and self.nodes.absent(parent, name):
                return self.long_timeout
        return self.negative_timeout

    def forget(self, req: int, ino: int, nlookup: int) -> None:
        self.nodes.forget(ino, nlookup)

    def forget_multi(self, req: int, forgets: list[tuple[int, int]]) -> None:
        for ino, nlookup in forgets:
            self.nodes.forget(ino, nlookup)

    def mknod(self, req: int, parent: int, name: bytes, mode: int, rdev: int) -> abi.fuse_entry_param:
        pfd = self.nodes.get(parent).fd
        with self._creating(req):
            os.mknod(name, mode, rdev, dir_fd=pfd)
        return self._lookup(parent, name)

    def mkdir(self, req: int, parent: int, name: bytes, mode: int) -> abi.fuse_entry_param:
        pfd = self.nodes.get(parent).fd
        with self._creating(req):
            os.mkdir(name, mode, dir_fd=pfd)
        return self._lookup(parent, name)

    def symlink(self, req: int, target: bytes, parent: int, name: bytes) -> abi.fuse_entry_param:
        pfd = self.nodes.get(parent).fd
        with self._as_caller(req):
            os.symlink(target, name, dir_fd=pfd)
        return self._lookup(parent, name)

    def link(self, req: int, ino: int, newparent: int, newname: bytes) -> abi.fuse_entry_param:
        node, pfd = self.nodes.get(ino), self.nodes.get(newparent).fd
        # linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, which the caller's fsuid drops; the /proc name does not.
        with self._as_caller(req):
            os.link(node.proc, newname, dst_dir_fd=pfd, follow_symlinks=True)
        return self._lookup(newparent, newname)

    def unlink(self, req: int, parent: int, name: bytes) -> None:
        pfd = self.nodes.get(parent).fd
        with self._as_caller(req):
            os.unlink(name, dir_fd=pfd)
        self._unnamed(parent, name)

    def _unnamed(self, parent: int, name: bytes) -> None:
        """`name` is gone from `parent` in SOURCE: from the table too, and its file, if that was its last name."""
        node = self.nodes.child(parent, name)
        self.nodes.removed(parent, name)
        if node is not None:
            self.nodes.unlinked(node)

    def rmdir(self, req: int, parent: int, name: bytes) -> None:
        pfd = self.nodes.get(parent).fd
        with self._as_caller(req), self.nodes.removing_directories:
            os.rmdir(name, dir_fd=pfd)
        self.nodes.removed(parent, name, directory=True)

    def rename(self, req: int, parent: int, name: bytes, newparent: int, newname: bytes, flags: int) -> None:
        pfd, npfd = self.nodes.get(parent).fd, self.nodes.get(newparent).fd
        replaced = None if flags & syscalls.RENAME_EXCHANGE else self.nodes.child(newparent, newname)
        with self._as_caller(req):
            syscalls.renameat2(pfd, os.fsdecode(name), npfd, os.fsdecode(newname), flags)
        self.nodes.renamed(parent, name, newparent, newname, bool(flags & syscalls.RENAME_EXCHANGE))
        if replaced is not None:
            self.nodes.unlinked(replaced)

    def readlink(self, req: int, ino: int) -> bytes:
        return os.readlink(b"", dir_fd=self.nodes.get(ino).fd)

    # -- attributes ---------------------------------------------------------------------------------------------
    def getattr(self, req: int, ino: int, fi: Any) -> tuple[abi.stat_t, float]:
        node = self.nodes.get(ino)
        t0 = time.monotonic_ns()
        return ll.stat_from(node.gone or os.fstat(node.fd)), self._attr_timeout(node, t0)

    def setattr(self, req: int, ino: int, attr: abi.stat_t, to_set: int, fi: Any) -> tuple[abi.stat_t, float]:
        node = self.nodes.get(ino)
        fh = fi.fh if fi is not None else None
        if to_set & abi.FUSE_SET_ATTR_MODE:
            self._chmod(req, node, attr.st_mode, fh)
        if to_set & (abi.FUSE_SET_ATTR_UID | abi.FUSE_SET_ATTR_GID):
            uid = attr.st_uid if to_set & abi.FUSE_SET_ATTR_UID else -1
            gid = attr.st_gid if to_set & abi.FUSE_SET_ATTR_GID else -1
            with self._as_caller(req):
                if fh is not None:
                    os.fchown(fh, uid, gid)
                else:
                    syscalls.fchown_empty_path(node.fd, uid, gid)
        if to_set & abi.FUSE_SET_ATTR_SIZE:
            with self._as_caller(req):  # the source clears setuid/setgid as it would for the caller
                if fh is not None:
                    os.ftruncate(fh, attr.st_size)
                else:
                    os.truncate(node.proc, attr.st_size)
        times = setattr_times(attr, to_set)
        if times is not None:
            with self._as_caller(req):
                syscalls.utimens(node.fd if fh is None else fh, times)
        t0 = time.monotonic_ns()
        return ll.stat_from(os.fstat(node.fd)), self._attr_timeout(node, t0)

    def _chmod(self, req: int, node: Node, mode: int, fh: int | None) -> None:
        """As the caller; the kernel's setuid/setgid clearing after a write by a non-owner as the daemon
        (credentials.kills_privileges)."""
        try:
            with self._as_caller(req):
                if fh is None:
                    syscalls.fchmod_empty_path(node.fd, mode)
                else:
                    os.fchmod(fh, mode)
        except PermissionError:
            proc = node.proc if fh is None else f"/proc/self/fd/{fh}"
            if not kills_privileges(proc, mode, self.as_caller):
                raise
            os.chmod(proc, mode)

    def access(self, req: int, ino: int, mask: int) -> None:
        node = self.nodes.get(ino)
        with self._as_caller(req):
            ok = os.access(node.proc, mask, effective_ids=True)
        if not ok:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    def statfs(self, req: int, ino: int) -> abi.statvfs_t:
        return _statvfs(os.fstatvfs(self.nodes.get(ino).fd))

    # -- files --------------------------------------------------------------------------------------------------
    def open(self, req: int, ino: int, fi: Any) -> None:
        node = self.nodes.get(ino)
        flags = (fi.flags & _OPEN_CLEAR) | os.O_CLOEXEC
        try:
            with self._as_caller(req):
                fd = self.nodes.reopen(node.fd, flags)
        except PermissionError:
            # An open for exec (execve, uselib) needs execute permission only, which the kernel (and here the
            # caller's fsuid) has checked; reading an execute-only file for it is then the daemon's to do.
            if not (fi.flags & _FMODE_EXEC and fi.flags & os.O_ACCMODE == os.O_RDONLY):
                raise
            with self._as_caller(req):
                if not os.access(node.proc, os.X_OK, effective_ids=True):
                    raise
            fd = self.nodes.reopen(node.fd, flags)
        self._opened(req, node, fd, fi)

    def create(self, req: int, parent: int, name: bytes, mode: int, fi: Any) -> abi.fuse_entry_param:
        pnode = self.nodes.get(parent)
        t0 = time.monotonic_ns()
        flags = (fi.flags & _CREATE_CLEAR) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        # Where a new file's lack of capabilities can be remembered (_no_capability), O_EXCL even where the caller
        # did not ask for it: the file is then known to be new, so its first write's capability check is answered
        # without asking SOURCE (getxattr: ~4 us). A name that exists (made behind the mount's back while the
        # kernel knew it as absent) is then opened as asked.
        exclusive = os.O_EXCL if fi.flags & os.O_EXCL or self._object_watched(pnode, t0) else 0
        with self._creating(req):
            try:
                fd = os.open(name, flags | exclusive, stat.S_IMODE(mode), dir_fd=pnode.fd)
                made = bool(exclusive)
            except FileExistsError:
                if fi.flags & os.O_EXCL:
                    raise
                fd = os.open(name, flags, stat.S_IMODE(mode), dir_fd=pnode.fd)
                made = False
        try:
            return self._new_open_entry(req, pnode, name, fd, fi, t0, made=made)
        except BaseException:
            os.close(fd)
            raise

    def tmpfile(self, req: int, parent: int, mode: int, fi: Any) -> abi.fuse_entry_param:
        pnode = self.nodes.get(parent)
        t0 = time.monotonic_ns()
        with self._creating(req):
            fd = os.open(".", (fi.flags & _OPEN_CLEAR) | os.O_TMPFILE | os.O_CLOEXEC, stat.S_IMODE(mode),
                         dir_fd=pnode.fd)
        try:
            return self._new_open_entry(req, pnode, None, fd, fi, t0, made=True)
        except BaseException:
            os.close(fd)
            raise

    def _new_open_entry(self, req: int, parent: Node, name: bytes | None, fd: int, fi: Any, t0: int, *,
                        made: bool) -> abi.fuse_entry_param:
        """The entry of the file just opened as `fd` by create or tmpfile; `made`: the open made it (a new file
        has no capabilities)."""
        st = os.fstat(fd)
        node = self.nodes.enter(parent.nodeid, name, self.nodes.reopen(fd, os.O_PATH | os.O_CLOEXEC), st)
        if made:
            self._no_capability(node, t0)
        try:
            self._opened(req, node, fd, fi, st)
        except BaseException:
            self.nodes.forget(node.nodeid, 1)
            raise
        return self._entry(node, st, parent, t0)

    def _opened(self, req: int, node: Node, fd: int, fi: Any, st: os.stat_result | None = None) -> None:
        fi.fh = fd
        if fi.flags & os.O_ACCMODE == os.O_RDONLY or not self.flushes and self._close_reports_nothing(node):
            # FOPEN_NOFLUSH: the kernel sends no FLUSH at close(). A read-only descriptor has nothing to report (no
            # write can have failed late), and neither has any on a filesystem whose files have no flush
            # operation (ext4, xfs, btrfs, tmpfs: their close() cannot fail); NFS reports write errors there.
            fi.noflush = 1
        if self.noatime:
            _set_noatime(fd)
        backing_id = 0
        with self._backing_lock:
            self.nodes.opened(node)
            if self.passthrough and node.kind == stat.S_IFREG:
                if not node.backing_id:
                    try:
                        # The kernel does the file's I/O with the credentials of the thread that registers it:
                        # the caller's ids, as for the daemon's own writes.
                        with self._as_caller_ids(req):
                            node.backing_id = ll.passthrough_open(req, fd)
                    except OSError as e:  # this open is then served (and traced) by the daemon
                        print(f"fuse-passthrough: kernel passthrough refused for a file ({e.strerror})",
                              file=sys.stderr)
                backing_id = node.backing_id
        if backing_id:
            fi.backing_id = backing_id
            fi.keep_cache = 0  # the mount's page cache must not shadow the backing file's
            return
        if fi.flags & os.O_DIRECT or self.direct_io:
            fi.direct_io = 1
        elif self.keep_cache:
            fi.keep_cache = 1
        elif self.auto_cache and node.kind == stat.S_IFREG:
            fi.keep_cache = int(self._pages_unchanged(node, os.fstat(fd) if st is None else st, self.noatime))

    def _pages_unchanged(self, node: Node, st: os.stat_result, noatime: bool) -> bool:
        """Whether the kernel's pages of `node` (a file's data, a directory's listing) still show the object
        `st` describes (then they are kept: the open replies keep_cache); either way they show it from now on
        (keep_cache=0 makes the kernel drop them). A change made since by any path, through the mount or not,
        changes the ctime; one made in the same clock tick as the stat might not, so such a stat is not kept. A
        filesystem that other machines change (NFS...) is never trusted: its pages are dropped at every open, as
        NFS itself does. Nor are they kept when the reads must reach SOURCE to update its atime as its mount says
        (strictatime, relatime), unless the daemon's opens do not update it (`noatime`: O_NOATIME)."""
        now = time.time_ns()
        state = (st.st_ctime_ns, st.st_mtime_ns, st.st_size)
        unchanged = node.pages == state
        keeping = self._keeping.get(st.st_dev)
        if keeping is None:
            keeping = self._keeping[st.st_dev] = self._keeping_of(node)
        if keeping != _KEEP_NEVER and noatime:  # O_NOATIME opens: reads leave the atime alone
            keeping = _KEEP_ALWAYS
        elif keeping == _KEEP_STRICTATIME:
            keeping = _KEEP_NEVER
        node.pages = state if keeping != _KEEP_NEVER and settled(st, now) else None
        if keeping == _KEEP_RELATIME and (st.st_atime_ns <= st.st_mtime_ns or st.st_atime_ns <= st.st_ctime_ns
                                          or now - st.st_atime_ns >= _DAY_NS):
            return False  # a read updates the atime
        return unchanged

    def _close_reports_nothing(self, node: Node) -> bool:
        """Whether close() of the node's files does nothing on SOURCE (no flush operation), by device."""
        dev = node.key[0]
        nothing = self._flushless.get(dev)
        if nothing is None:
            from .watcher import filesystem_type
            nothing = self._flushless[dev] = filesystem_type(node.proc) in _FLUSHLESS_FILESYSTEMS
        return nothing

    def _keeping_of(self, node: Node) -> int:
        from .watcher import local_filesystem
        if not local_filesystem(node.proc):
            return _KEEP_NEVER
        flags = os.statvfs(node.proc).f_flag
        if flags & (os.ST_NOATIME | os.ST_RDONLY):
            return _KEEP_ALWAYS
        return _KEEP_RELATIME if flags & os.ST_RELATIME else _KEEP_STRICTATIME

    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> bytes:
        return os.pread(fi.fh, size, off)

    def write(self, req: int, ino: int, data: bytes | memoryview, off: int, fi: Any) -> int:
        with self._as_writer(req, fi.fh):
            return os.pwrite(fi.fh, data, off)

    def _as_writer(self, req: int, fh: int) -> CallerCredentials:
        """Data changes as the caller, so the source clears setuid/setgid bits as it would for them (root keeps
        them). Its supplementary groups (read from /proc, so only where they matter): a setgid bit without
        group-execute is kept for members of the file's group only."""
        ids = self._as_caller_ids(req)
        if not ids.switches():  # the daemon's own ids: no groups to take either
            return ids
        sgid_only = os.fstat(fh).st_mode & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID
        return self._as_caller(req) if sgid_only else ids

    def flush(self, req: int, ino: int, fi: Any) -> None:
        # What close() of one descriptor does on the source (e.g. NFS reports write errors here).
        os.close(os.dup(fi.fh))

    def release(self, req: int, ino: int, fi: Any) -> None:
        os.close(fi.fh)
        node = self.nodes.get(ino)
        with self._backing_lock:
            last = self.nodes.released(node) == 0
            if last and node.backing_id:
                backing_id, node.backing_id = node.backing_id, 0
                try:
                    ll.passthrough_close(req, backing_id)
                except OSError as e:
                    print(f"fuse-passthrough: closing backing id {backing_id} failed: {e.strerror}",
                          file=sys.stderr)
        if last and not node.names:  # unlinked while open (RELEASE comes after close() returned): free it now
            self.nodes.unlinked(node)

    def fsync(self, req: int, ino: int, datasync: int, fi: Any) -> None:
        (os.fdatasync if datasync else os.fsync)(fi.fh)

    def fallocate(self, req: int, ino: int, mode: int, off: int, length: int, fi: Any) -> None:
        with self._as_writer(req, fi.fh):
            syscalls.fallocate(fi.fh, mode, off, length)

    def copy_file_range(self, req: int, ino_in: int, off_in: int, fi_in: Any, ino_out: int, off_out: int,
                        fi_out: Any, length: int, flags: int) -> int:
        if flags:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        with self._as_writer(req, fi_out.fh):
            return os.copy_file_range(fi_in.fh, fi_out.fh, length, off_in, off_out)

    def lseek(self, req: int, ino: int, off: int, whence: int, fi: Any) -> int:
        return os.lseek(fi.fh, off, whence)

    # -- directories --------------------------------------------------------------------------------------------
    def opendir(self, req: int, ino: int, fi: Any) -> None:
        if not self.dir_handles:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        node = self.nodes.get(ino)
        self._request.req = req
        must_check = not self._root or self.as_caller.switches()  # the caller's permission, at open as natively
        handle = _DirHandle(node, self._open_dir(node, as_caller=True) if must_check else -1)
        fi.fh = number = next(self._dir_numbers)
        self._dirs[number] = handle
        if self.auto_cache and self.entry_timeout > 0:
            # The kernel keeps the listing (FOPEN_CACHE_DIR) and, while the directory is unchanged, serves the
            # next opendir's readdirs from it, as it keeps a file's pages: no READDIR(PLUS) request and no lookup
            # per entry. Any change of its entries changes its ctime; the watcher's invalidation drops it too.
            fi.cache_readdir = 1
            fi.keep_cache = int(self._pages_unchanged(node, os.fstat(node.fd), self.nodiratime))

    def _open_dir(self, node: Node, as_caller: bool = False) -> int:
        if as_caller:
            with self.as_caller:
                fd = self.nodes.reopen(node.fd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            fd = self.nodes.reopen(node.fd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if self.nodiratime:
            _set_noatime(fd)  # as the daemon: O_NOATIME needs the owner's ids or CAP_FOWNER
        return fd

    def _dir_fd(self, fh: int) -> int:
        handle = self._dirs[fh]
        if handle.fd == -1:
            handle.fd = self._open_dir(handle.node)
        return handle.fd

    def _listing(self, ino: int, off: int, fh: int) -> tuple[Listing, int]:
        """The directory's listing (read again at offset 0: opendir, rewinddir, a new reader) and the index of
        the first entry after `off`. With a handle (`fh`), the handle's own; without, the directory's last one,
        which any reader may continue in (offsets are names' hashes, `_read_listing`)."""
        if fh:
            handle = self._dirs[fh]
            listing = handle.listing
            if listing is None or off == 0:
                listing = handle.listing = _read_listing(self._dir_fd(fh))
        else:
            with self._listings_lock:
                listing = None if off == 0 else self._listings.get(ino)
            if listing is None:
                fd = self._open_dir(self.nodes.get(ino))
                try:
                    listing = _read_listing(fd)
                finally:
                    os.close(fd)
                with self._listings_lock:
                    self._keep_listing(ino, listing)
            start = bisect.bisect_right(listing[0], off)
            if start == len(listing[0]):  # a reader at its end: most listings are read once, whole
                with self._listings_lock:
                    self._keep_listing(ino, None)
            return listing, start
        return listing, bisect.bisect_right(listing[0], off)

    def _keep_listing(self, ino: int, listing: Listing | None) -> None:
        """Keep `listing` as the directory's last (None: drop it), within the bounds (under _listings_lock)."""
        old = self._listings.pop(ino, None)
        if old is not None:
            self._listed -= len(old[0])
        if listing is None:
            return
        self._listings[ino] = listing
        self._listed += len(listing[0])
        while len(self._listings) > _LISTINGS_KEPT or self._listed > _LISTED_ENTRIES_KEPT and len(self._listings) > 1:
            self._listed -= len(self._listings.pop(next(iter(self._listings)))[0])

    def readdir(self, req: int, ino: int, size: int, off: int, fi: Any) -> ll.DirBuffer:
        (offsets, entries), start = self._listing(ino, off, fi.fh)
        buf = ll.DirBuffer(req, size)
        st = ll.Stat()
        for i in range(start, len(entries)):
            st.st_ino, st.st_mode = entries[i][1], entries[i][2]
            if not buf.add(entries[i][0], st, offsets[i]):
                break
        return buf

    def readdirplus(self, req: int, ino: int, size: int, off: int, fi: Any) -> ll.DirBuffer:
        (offsets, entries), start = self._listing(ino, off, fi.fh)
        buf = ll.DirBuffer(req, size)
        for i in range(start, len(entries)):
            name, d_ino, kind = entries[i]
            if name == b"." or name == b"..":
                e = ll.EntryParam()  # node id 0: no entry, no lookup count (the kernel skips these)
                e.attr.st_ino, e.attr.st_mode = d_ino, kind
            else:
                try:
                    e = self._lookup(ino, name)
                except OSError:  # gone since the listing
                    continue
            if not buf.add_plus(name, e, offsets[i]):
                if e.ino:
                    self.nodes.forget(e.ino, 1)
                break
        return buf

    def releasedir(self, req: int, ino: int, fi: Any) -> None:
        handle = self._dirs.pop(fi.fh)
        if handle.fd != -1:
            os.close(handle.fd)

    def fsyncdir(self, req: int, ino: int, datasync: int, fi: Any) -> None:
        if fi.fh:
            (os.fdatasync if datasync else os.fsync)(self._dir_fd(fi.fh))
            return
        fd = self._open_dir(self.nodes.get(ino))
        try:
            (os.fdatasync if datasync else os.fsync)(fd)
        finally:
            os.close(fd)

    # -- extended attributes ------------------------------------------------------------------------------------
    # "trusted." needs CAP_SYS_ADMIN on the source; the daemon has it, the caller may not.
    def _privileged(self, req: int, name: bytes) -> bool:
        return name.startswith(b"trusted.") and ll.caller(req)[0] != _ROOT_UID

    def _xattr_path(self, node: Node) -> tuple[str, bool]:
        """A path for the xattr calls, and whether to follow it: a symlink's own attributes through its parent
        directory and name (the /proc name of an O_PATH symlink fd cannot be used without following it)."""
        if node.kind != stat.S_IFLNK:
            return node.proc, True
        if not node.names:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        parent, name = node.names[-1]
        return f"/proc/self/fd/{self.nodes.get(parent).fd}/{os.fsdecode(name)}", False

    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> bytes:
        if self._privileged(req, name):
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
        node = self.nodes.get(ino)
        if name != _CAPABILITY:
            path, follow = self._xattr_path(node)
            return os.getxattr(path, name, follow_symlinks=follow)
        # The kernel asks for this one before a file's first write and after each chown or chmod: its absence is
        # remembered where the watcher would report a change (_no_capability).
        if node.caps_absent > node.xattrs_changed:
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
        t0 = time.monotonic_ns()
        path, follow = self._xattr_path(node)
        try:
            return os.getxattr(path, name, follow_symlinks=follow)
        except OSError as e:
            if e.errno == errno.ENODATA:
                self._no_capability(node, t0)
            raise

    def _no_capability(self, node: Node, t0: int) -> None:
        """`node` had no "security.capability" at `t0` (time.monotonic_ns()): remembered where any later change of
        its extended attributes is seen, through the mount (setxattr, removexattr) or by the watcher's filesystem
        mark (FAN_ATTRIB, whatever name it was made through). Either sets `xattrs_changed` after the change, so a
        change racing with the check that found none leaves `caps_absent` the earlier."""
        if self._object_watched(node, t0):
            node.caps_absent = t0

    def listxattr(self, req: int, ino: int, size: int) -> bytes:
        path, follow = self._xattr_path(self.nodes.get(ino))
        names = [os.fsencode(n) for n in os.listxattr(path, follow_symlinks=follow)]
        return b"".join(n + b"\0" for n in names if not self._privileged(req, n))

    def setxattr(self, req: int, ino: int, name: bytes, value: bytes, flags: int) -> None:
        if self._privileged(req, name):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        node = self.nodes.get(ino)
        path, follow = self._xattr_path(node)
        try:
            with self._as_caller(req):
                os.setxattr(path, name, value, flags, follow_symlinks=follow)
        finally:
            node.xattrs_changed = time.monotonic_ns()

    def removexattr(self, req: int, ino: int, name: bytes) -> None:
        if self._privileged(req, name):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        node = self.nodes.get(ino)
        path, follow = self._xattr_path(node)
        try:
            with self._as_caller(req):
                os.removexattr(path, name, follow_symlinks=follow)
        finally:
            node.xattrs_changed = time.monotonic_ns()


def setattr_times(attr: abi.stat_t, to_set: int) -> tuple[syscalls.Timespec, syscalls.Timespec] | None:
    """utimensat's times for a SETATTR (UTIME_NOW / UTIME_OMIT as the kernel asked), None if none change."""
    if not to_set & (abi.FUSE_SET_ATTR_ATIME | abi.FUSE_SET_ATTR_MTIME):
        return None
    return (_time_to_set(attr, "st_atim", to_set, abi.FUSE_SET_ATTR_ATIME, abi.FUSE_SET_ATTR_ATIME_NOW),
            _time_to_set(attr, "st_mtim", to_set, abi.FUSE_SET_ATTR_MTIME, abi.FUSE_SET_ATTR_MTIME_NOW))


def _time_to_set(attr: abi.stat_t, field: str, to_set: int, given: int, now: int) -> syscalls.Timespec:
    """One of them: now, the one `attr` gives (its ctypes field read only then), or left alone."""
    if to_set & now:
        return (0, syscalls.UTIME_NOW)
    if to_set & given:
        ts = getattr(attr, field)
        return (ts.tv_sec, ts.tv_nsec)
    return (0, syscalls.UTIME_OMIT)
