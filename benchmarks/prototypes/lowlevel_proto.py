#!/usr/bin/env python3
"""Prototype: a passthrough filesystem on libfuse3's *low-level* API, through ctypes, modelled on passthrough_ll.c.

    python lowlevel_proto.py [--timeout S] [--single-threaded] [-o OPT,...] [--counts FILE] [-d] SOURCE MOUNTPOINT

Design (as libfuse's example/passthrough_ll.c): every kernel inode is one source object, held open with an
O_PATH fd; inodes are keyed by the source's (st_dev, st_ino), so hard links share one kernel inode; lookup
counts are kept per inode and dropped by forget/forget_multi (the fd is closed when the count reaches 0).
Requests name their objects by inode number, never by path, so no path is ever resolved twice.
Attribute and entry replies carry --timeout (default 1.0 s) so the kernel caches them.

Runs in the foreground; ends on SIGINT/SIGTERM/SIGHUP (libfuse's handlers) or `fusermount3 -u MOUNTPOINT`.
At exit, the number of requests per operation is written to --counts FILE as JSON (and to stderr with -v).
This is a benchmark prototype, not production code: no xattrs, locks, fallocate, copy_file_range, ioctl.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import itertools
import json
import os
import resource
import signal
import stat
import sys
import threading
import time
import traceback
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_long,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)

# ------------------------------------------------------------------------------------------------ C structures
# x86_64 Linux layouts (checked below against the sizes a C compiler gives for libfuse 3.14 headers).


class c_timespec(Structure):
    _fields_ = [("tv_sec", c_long), ("tv_nsec", c_long)]


class c_stat(Structure):
    _fields_ = [
        ("st_dev", c_uint64), ("st_ino", c_uint64), ("st_nlink", c_uint64), ("st_mode", c_uint32),
        ("st_uid", c_uint32), ("st_gid", c_uint32), ("__pad0", c_int32), ("st_rdev", c_uint64),
        ("st_size", c_int64), ("st_blksize", c_int64), ("st_blocks", c_int64),
        ("st_atim", c_timespec), ("st_mtim", c_timespec), ("st_ctim", c_timespec), ("__reserved", c_long * 3),
    ]


class c_statvfs(Structure):
    _fields_ = [
        ("f_bsize", c_ulong), ("f_frsize", c_ulong), ("f_blocks", c_uint64), ("f_bfree", c_uint64),
        ("f_bavail", c_uint64), ("f_files", c_uint64), ("f_ffree", c_uint64), ("f_favail", c_uint64),
        ("f_fsid", c_ulong), ("f_flag", c_ulong), ("f_namemax", c_ulong), ("__f_spare", c_int * 6),
    ]


class fuse_file_info(Structure):  # libfuse 3.0 .. 3.14 layout (3.15/3.16 inserted a bit; 3.17 added padding)
    _fields_ = [
        ("flags", c_int32),
        ("writepage", c_uint32, 1), ("direct_io", c_uint32, 1), ("keep_cache", c_uint32, 1),
        ("flush", c_uint32, 1), ("nonseekable", c_uint32, 1), ("flock_release", c_uint32, 1),
        ("cache_readdir", c_uint32, 1), ("noflush", c_uint32, 1), ("padding", c_uint32, 24),
        ("padding2", c_uint32),
        ("fh", c_uint64), ("lock_owner", c_uint64), ("poll_events", c_uint32),
    ]


class fuse_entry_param(Structure):
    _fields_ = [("ino", c_uint64), ("generation", c_uint64), ("attr", c_stat),
                ("attr_timeout", c_double), ("entry_timeout", c_double)]


class fuse_ctx(Structure):
    _fields_ = [("uid", c_uint32), ("gid", c_uint32), ("pid", c_int32), ("umask", c_uint32)]


class fuse_forget_data(Structure):
    _fields_ = [("ino", c_uint64), ("nlookup", c_uint64)]


class fuse_args(Structure):
    _fields_ = [("argc", c_int), ("argv", POINTER(c_char_p)), ("allocated", c_int)]


assert ctypes.sizeof(c_stat) == 144 and ctypes.sizeof(c_statvfs) == 112
assert ctypes.sizeof(fuse_file_info) == 40 and fuse_file_info.fh.offset == 16
assert ctypes.sizeof(fuse_entry_param) == 176 and ctypes.sizeof(fuse_ctx) == 16

req_t = c_void_p
ino_t = c_uint64
FI = POINTER(fuse_file_info)
ST = POINTER(c_stat)

# struct fuse_lowlevel_ops, field order exactly as in /usr/include/fuse3/fuse_lowlevel.h (FUSE_USE_VERSION >= 35).
LL_OPS = [
    ("init", [c_void_p, c_void_p]),
    ("destroy", [c_void_p]),
    ("lookup", [req_t, ino_t, c_char_p]),
    ("forget", [req_t, ino_t, c_uint64]),
    ("getattr", [req_t, ino_t, FI]),
    ("setattr", [req_t, ino_t, ST, c_int, FI]),
    ("readlink", [req_t, ino_t]),
    ("mknod", [req_t, ino_t, c_char_p, c_uint32, c_uint64]),
    ("mkdir", [req_t, ino_t, c_char_p, c_uint32]),
    ("unlink", [req_t, ino_t, c_char_p]),
    ("rmdir", [req_t, ino_t, c_char_p]),
    ("symlink", [req_t, c_char_p, ino_t, c_char_p]),
    ("rename", [req_t, ino_t, c_char_p, ino_t, c_char_p, c_uint]),
    ("link", [req_t, ino_t, ino_t, c_char_p]),
    ("open", [req_t, ino_t, FI]),
    ("read", [req_t, ino_t, c_size_t, c_int64, FI]),
    ("write", [req_t, ino_t, c_void_p, c_size_t, c_int64, FI]),
    ("flush", [req_t, ino_t, FI]),
    ("release", [req_t, ino_t, FI]),
    ("fsync", [req_t, ino_t, c_int, FI]),
    ("opendir", [req_t, ino_t, FI]),
    ("readdir", [req_t, ino_t, c_size_t, c_int64, FI]),
    ("releasedir", [req_t, ino_t, FI]),
    ("fsyncdir", [req_t, ino_t, c_int, FI]),
    ("statfs", [req_t, ino_t]),
    ("setxattr", [req_t, ino_t, c_char_p, c_void_p, c_size_t, c_int]),
    ("getxattr", [req_t, ino_t, c_char_p, c_size_t]),
    ("listxattr", [req_t, ino_t, c_size_t]),
    ("removexattr", [req_t, ino_t, c_char_p]),
    ("access", [req_t, ino_t, c_int]),
    ("create", [req_t, ino_t, c_char_p, c_uint32, FI]),
    ("getlk", [req_t, ino_t, FI, c_void_p]),
    ("setlk", [req_t, ino_t, FI, c_void_p, c_int]),
    ("bmap", [req_t, ino_t, c_size_t, c_uint64]),
    ("ioctl", [req_t, ino_t, c_uint, c_void_p, FI, c_uint, c_void_p, c_size_t, c_size_t]),
    ("poll", [req_t, ino_t, FI, c_void_p]),
    ("write_buf", [req_t, ino_t, c_void_p, c_int64, FI]),
    ("retrieve_reply", [req_t, c_void_p, ino_t, c_int64, c_void_p]),
    ("forget_multi", [req_t, c_size_t, POINTER(fuse_forget_data)]),
    ("flock", [req_t, ino_t, FI, c_int]),
    ("fallocate", [req_t, ino_t, c_int, c_int64, c_int64, FI]),
    ("readdirplus", [req_t, ino_t, c_size_t, c_int64, FI]),
    ("copy_file_range", [req_t, ino_t, c_int64, FI, ino_t, c_int64, FI, c_size_t, c_int]),
    ("lseek", [req_t, ino_t, c_int64, c_int, FI]),
]
CFUNCS = {name: CFUNCTYPE(None, *args) for name, args in LL_OPS}


class fuse_lowlevel_ops(Structure):
    _fields_ = [(name, CFUNCS[name]) for name, _ in LL_OPS]


assert ctypes.sizeof(fuse_lowlevel_ops) == 44 * 8

# ------------------------------------------------------------------------------------------------ libfuse3 / libc
fuse = ctypes.CDLL(os.environ.get("FUSE_LL_LIBRARY", "libfuse3.so.3"))
libc = ctypes.CDLL(None, use_errno=True)


def _bind(lib, name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


reply_err = _bind(fuse, "fuse_reply_err", c_int, req_t, c_int)
reply_none = _bind(fuse, "fuse_reply_none", None, req_t)
reply_entry = _bind(fuse, "fuse_reply_entry", c_int, req_t, POINTER(fuse_entry_param))
reply_create = _bind(fuse, "fuse_reply_create", c_int, req_t, POINTER(fuse_entry_param), FI)
reply_attr = _bind(fuse, "fuse_reply_attr", c_int, req_t, ST, c_double)
reply_readlink = _bind(fuse, "fuse_reply_readlink", c_int, req_t, c_char_p)
reply_open = _bind(fuse, "fuse_reply_open", c_int, req_t, FI)
reply_write = _bind(fuse, "fuse_reply_write", c_int, req_t, c_size_t)
reply_buf = _bind(fuse, "fuse_reply_buf", c_int, req_t, c_char_p, c_size_t)
reply_statfs = _bind(fuse, "fuse_reply_statfs", c_int, req_t, POINTER(c_statvfs))
add_direntry = _bind(fuse, "fuse_add_direntry", c_size_t, req_t, c_void_p, c_size_t, c_char_p, ST, c_int64)
add_direntry_plus = _bind(fuse, "fuse_add_direntry_plus", c_size_t, req_t, c_void_p, c_size_t, c_char_p,
                          POINTER(fuse_entry_param), c_int64)
req_ctx = _bind(fuse, "fuse_req_ctx", POINTER(fuse_ctx), req_t)
session_new = _bind(fuse, "fuse_session_new", c_void_p, POINTER(fuse_args), POINTER(fuse_lowlevel_ops), c_size_t,
                    c_void_p)
session_mount = _bind(fuse, "fuse_session_mount", c_int, c_void_p, c_char_p)
set_signal_handlers = _bind(fuse, "fuse_set_signal_handlers", c_int, c_void_p)
remove_signal_handlers = _bind(fuse, "fuse_remove_signal_handlers", None, c_void_p)
session_loop = _bind(fuse, "fuse_session_loop", c_int, c_void_p)
# 3.12+: fuse_session_loop_mt(se, struct fuse_loop_config *) is the symbol fuse_session_loop_mt_312
# (fuse_session_loop_mt@@FUSE_3.12); the config is opaque and made by fuse_loop_cfg_create().
session_loop_mt = _bind(fuse, "fuse_session_loop_mt_312", c_int, c_void_p, c_void_p)
loop_cfg_create = _bind(fuse, "fuse_loop_cfg_create", c_void_p)
loop_cfg_destroy = _bind(fuse, "fuse_loop_cfg_destroy", None, c_void_p)
loop_cfg_set_max_threads = _bind(fuse, "fuse_loop_cfg_set_max_threads", None, c_void_p, c_uint)
session_unmount = _bind(fuse, "fuse_session_unmount", None, c_void_p)
session_destroy = _bind(fuse, "fuse_session_destroy", None, c_void_p)

c_fstatat = _bind(libc, "fstatat", c_int, c_int, c_char_p, ST, c_int)
c_fstatvfs = _bind(libc, "fstatvfs", c_int, c_int, POINTER(c_statvfs))
c_utimensat = _bind(libc, "utimensat", c_int, c_int, c_char_p, POINTER(c_timespec), c_int)
c_fchownat = _bind(libc, "fchownat", c_int, c_int, c_char_p, c_uint32, c_uint32, c_int)
c_linkat = _bind(libc, "linkat", c_int, c_int, c_char_p, c_int, c_char_p, c_int)
c_renameat2 = _bind(libc, "renameat2", c_int, c_int, c_char_p, c_int, c_char_p, c_uint)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
SET_MODE, SET_UID, SET_GID, SET_SIZE, SET_ATIME, SET_MTIME = 1, 2, 4, 8, 16, 32
SET_ATIME_NOW, SET_MTIME_NOW = 1 << 7, 1 << 8
ROOT_ID = 1


def check(res: int) -> int:
    if res == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return res


# ------------------------------------------------------------------------------------------------ the filesystem
class Inode:
    __slots__ = ("fd", "key", "ino", "nlookup")

    def __init__(self, fd: int, key: tuple[int, int], ino: int, nlookup: int) -> None:
        self.fd, self.key, self.ino, self.nlookup = fd, key, ino, nlookup


class DirHandle:
    __slots__ = ("fd", "entries")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.entries: list[tuple[bytes, int, int]] | None = None


class LowLevelPassthrough:
    def __init__(self, source: str, timeout: float) -> None:
        self.timeout = timeout
        fd = os.open(source, os.O_PATH)
        st = os.fstat(fd)
        self.root = Inode(fd, (st.st_dev, st.st_ino), ROOT_ID, 2)
        self.inodes: dict[int, Inode] = {ROOT_ID: self.root}
        self.by_key: dict[tuple[int, int], Inode] = {}
        self.next_ino = itertools.count(2)
        self.lock = threading.Lock()
        self.dirs: dict[int, DirHandle] = {}
        self.next_dh = itertools.count(1)
        self.euid, self.egid = os.geteuid(), os.getegid()

    # -- inode table
    def _stat(self, fd: int, buf: c_stat) -> None:
        check(c_fstatat(fd, b"", byref(buf), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))

    def do_lookup(self, parent: int, name: bytes, e: fuse_entry_param) -> None:
        """Fill e for parent/name and take one lookup reference on its inode (passthrough_ll's lo_do_lookup)."""
        pfd = self.inodes[parent].fd
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=pfd)
        try:
            self._stat(fd, e.attr)
        except OSError:
            os.close(fd)
            raise
        key = (e.attr.st_dev, e.attr.st_ino)
        with self.lock:
            inode = self.by_key.get(key)
            if inode is not None:
                inode.nlookup += 1
            else:
                inode = Inode(fd, key, next(self.next_ino), 1)
                self.by_key[key] = inode
                self.inodes[inode.ino] = inode
                fd = -1
        if fd != -1:
            os.close(fd)
        e.ino = inode.ino
        e.attr_timeout = e.entry_timeout = self.timeout

    def forget_one(self, ino: int, n: int) -> None:
        with self.lock:
            inode = self.inodes.get(ino)
            if inode is None or ino == ROOT_ID:
                return
            inode.nlookup -= n
            if inode.nlookup > 0:
                return
            del self.inodes[ino]
            if self.by_key.get(inode.key) is inode:
                del self.by_key[inode.key]
        os.close(inode.fd)

    def _proc(self, ino: int) -> str:
        return f"/proc/self/fd/{self.inodes[ino].fd}"

    def _chown_to_caller(self, req: int, parent: int, name: bytes) -> None:
        ctx = req_ctx(req).contents
        if ctx.uid != self.euid or ctx.gid != self.egid:  # new objects belong to the caller, not the daemon
            os.chown(name, ctx.uid, ctx.gid, dir_fd=self.inodes[parent].fd, follow_symlinks=False)

    def _reply_new_entry(self, req: int, parent: int, name: bytes) -> None:
        self._chown_to_caller(req, parent, name)
        e = fuse_entry_param()
        self.do_lookup(parent, name, e)
        reply_entry(req, byref(e))

    # -- operations (each must reply exactly once, or raise OSError before replying)
    def init(self, userdata, conn):
        pass

    def destroy(self, userdata):
        pass

    def lookup(self, req, parent, name):
        e = fuse_entry_param()
        self.do_lookup(parent, name, e)
        reply_entry(req, byref(e))

    def forget(self, req, ino, nlookup):
        self.forget_one(ino, nlookup)
        reply_none(req)

    def forget_multi(self, req, count, forgets):
        for i in range(count):
            self.forget_one(forgets[i].ino, forgets[i].nlookup)
        reply_none(req)

    def getattr(self, req, ino, fi):
        st = c_stat()
        self._stat(self.inodes[ino].fd, st)
        reply_attr(req, byref(st), self.timeout)

    def setattr(self, req, ino, attr, valid, fi):
        a = attr.contents
        inode = self.inodes[ino]
        fh = fi.contents.fh if fi else None
        if valid & SET_MODE:
            if fh is not None:
                os.fchmod(fh, a.st_mode)
            else:
                os.chmod(self._proc(ino), a.st_mode)
        if valid & (SET_UID | SET_GID):
            uid = a.st_uid if valid & SET_UID else 0xFFFFFFFF
            gid = a.st_gid if valid & SET_GID else 0xFFFFFFFF
            check(c_fchownat(inode.fd, b"", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
        if valid & SET_SIZE:
            if fh is not None:
                os.ftruncate(fh, a.st_size)
            else:
                os.truncate(self._proc(ino), a.st_size)
        if valid & (SET_ATIME | SET_MTIME):
            tv = (c_timespec * 2)()
            for i, (bit, now, src) in enumerate(((SET_ATIME, SET_ATIME_NOW, a.st_atim),
                                                 (SET_MTIME, SET_MTIME_NOW, a.st_mtim))):
                if valid & now:
                    tv[i].tv_nsec = UTIME_NOW
                elif valid & bit:
                    tv[i].tv_sec, tv[i].tv_nsec = src.tv_sec, src.tv_nsec
                else:
                    tv[i].tv_nsec = UTIME_OMIT
            if fh is not None:
                check(c_utimensat(fh, None, tv, 0))  # futimens
            else:
                check(c_utimensat(AT_FDCWD, self._proc(ino).encode(), tv, 0))
        self.getattr(req, ino, None)

    def readlink(self, req, ino):
        reply_readlink(req, os.readlink(b"", dir_fd=self.inodes[ino].fd))

    def mknod(self, req, parent, name, mode, rdev):
        os.mknod(name, mode, rdev, dir_fd=self.inodes[parent].fd)
        self._reply_new_entry(req, parent, name)

    def mkdir(self, req, parent, name, mode):
        os.mkdir(name, mode, dir_fd=self.inodes[parent].fd)
        self._reply_new_entry(req, parent, name)

    def symlink(self, req, link, parent, name):
        os.symlink(link, name, dir_fd=self.inodes[parent].fd)
        self._reply_new_entry(req, parent, name)

    def unlink(self, req, parent, name):
        os.unlink(name, dir_fd=self.inodes[parent].fd)
        reply_err(req, 0)

    def rmdir(self, req, parent, name):
        os.rmdir(name, dir_fd=self.inodes[parent].fd)
        reply_err(req, 0)

    def rename(self, req, parent, name, newparent, newname, flags):
        pfd, nfd = self.inodes[parent].fd, self.inodes[newparent].fd
        if flags:
            check(c_renameat2(pfd, name, nfd, newname, flags))
        else:
            os.rename(name, newname, src_dir_fd=pfd, dst_dir_fd=nfd)
        reply_err(req, 0)

    def link(self, req, ino, newparent, newname):
        check(c_linkat(self.inodes[ino].fd, b"", self.inodes[newparent].fd, newname, AT_EMPTY_PATH))
        e = fuse_entry_param()
        self.do_lookup(newparent, newname, e)
        reply_entry(req, byref(e))

    def open(self, req, ino, fi):
        f = fi.contents
        f.fh = os.open(self._proc(ino), f.flags & ~os.O_NOFOLLOW)
        reply_open(req, fi)

    def create(self, req, parent, name, mode, fi):
        f = fi.contents
        fd = os.open(name, (f.flags | os.O_CREAT) & ~os.O_NOFOLLOW, mode, dir_fd=self.inodes[parent].fd)
        try:
            self._chown_to_caller(req, parent, name)
            e = fuse_entry_param()
            self.do_lookup(parent, name, e)
        except OSError:
            os.close(fd)
            raise
        f.fh = fd
        reply_create(req, byref(e), fi)

    def read(self, req, ino, size, off, fi):
        data = os.pread(fi.contents.fh, size, off)
        reply_buf(req, data, len(data))

    def write(self, req, ino, buf, size, off, fi):
        reply_write(req, os.pwrite(fi.contents.fh, ctypes.string_at(buf, size), off))

    def flush(self, req, ino, fi):
        os.close(os.dup(fi.contents.fh))
        reply_err(req, 0)

    def release(self, req, ino, fi):
        os.close(fi.contents.fh)
        reply_err(req, 0)

    def fsync(self, req, ino, datasync, fi):
        (os.fdatasync if datasync else os.fsync)(fi.contents.fh)
        reply_err(req, 0)

    def opendir(self, req, ino, fi):
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.inodes[ino].fd)
        with self.lock:
            dh = next(self.next_dh)
            self.dirs[dh] = DirHandle(fd)
        fi.contents.fh = dh
        reply_open(req, fi)

    def _entries(self, dh: DirHandle, ino: int, off: int) -> list[tuple[bytes, int, int]]:
        if dh.entries is None or off == 0:  # (re)read the directory at offset 0 (opendir, rewinddir)
            ents = [(b".", self.inodes[ino].key[1], stat.S_IFDIR),
                    (b"..", os.stat("..", dir_fd=dh.fd).st_ino, stat.S_IFDIR)]
            with os.scandir(dh.fd) as it:
                for d in it:
                    mode = (stat.S_IFDIR if d.is_dir(follow_symlinks=False) else
                            stat.S_IFLNK if d.is_symlink() else
                            stat.S_IFREG if d.is_file(follow_symlinks=False) else 0)
                    ents.append((os.fsencode(d.name), d.inode(), mode))
            dh.entries = ents
        return dh.entries

    def readdir(self, req, ino, size, off, fi):
        ents = self._entries(self.dirs[fi.contents.fh], ino, off)
        buf = ctypes.create_string_buffer(size)
        base = ctypes.addressof(buf)
        pos = 0
        st = c_stat()
        for i in range(off, len(ents)):
            name, d_ino, mode = ents[i]
            st.st_ino, st.st_mode = d_ino, mode
            n = add_direntry(req, base + pos, size - pos, name, byref(st), i + 1)
            if n > size - pos:
                break
            pos += n
        reply_buf(req, buf, pos)

    def readdirplus(self, req, ino, size, off, fi):
        ents = self._entries(self.dirs[fi.contents.fh], ino, off)
        buf = ctypes.create_string_buffer(size)
        base = ctypes.addressof(buf)
        pos = 0
        for i in range(off, len(ents)):
            name, d_ino, mode = ents[i]
            e = fuse_entry_param()
            if name in (b".", b".."):
                e.attr.st_ino, e.attr.st_mode = d_ino, mode
            else:
                try:
                    self.do_lookup(ino, name, e)
                except OSError:  # vanished since the listing: skip it
                    continue
            n = add_direntry_plus(req, base + pos, size - pos, name, byref(e), i + 1)
            if n > size - pos:
                if e.ino:
                    self.forget_one(e.ino, 1)
                break
            pos += n
        reply_buf(req, buf, pos)

    def releasedir(self, req, ino, fi):
        with self.lock:
            dh = self.dirs.pop(fi.contents.fh)
        os.close(dh.fd)
        reply_err(req, 0)

    def fsyncdir(self, req, ino, datasync, fi):
        fd = self.dirs[fi.contents.fh].fd
        (os.fdatasync if datasync else os.fsync)(fd)
        reply_err(req, 0)

    def statfs(self, req, ino):
        sv = c_statvfs()
        check(c_fstatvfs(self.inodes[ino].fd, byref(sv)))
        reply_statfs(req, byref(sv))


# ------------------------------------------------------------------------------------------------ glue
NO_REPLY = {"init", "destroy", "forget", "forget_multi"}


_tls = threading.local()
_gil_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_ensure.restype = c_int


def _pin_thread_state() -> None:
    """Keep this libfuse worker thread's Python thread state alive between callbacks.

    ctypes makes and destroys a PyThreadState around every callback on a thread Python did not start; one extra
    PyGILState_Ensure (never released) keeps it, which saves that per-request set-up. The worker threads end only
    when the session ends (pthread_cancel while blocked in read, i.e. not holding the GIL).
    """
    if not getattr(_tls, "pinned", False):
        _gil_ensure()
        _tls.pinned = True


def build_ops(fs: LowLevelPassthrough, counters: dict[str, itertools.count], pin: bool = True):
    ops = fuse_lowlevel_ops()
    keep = []
    for name, _ in LL_OPS:
        method = getattr(fs, name, None)
        if method is None:
            continue  # NULL: libfuse answers ENOSYS
        counter = counters.setdefault(name, itertools.count())

        def wrapper(*args, _m=method, _c=counter, _name=name):
            next(_c)  # atomic under the GIL
            if pin:
                _pin_thread_state()
            try:
                _m(*args)
            except OSError as exc:
                if _name not in NO_REPLY:
                    reply_err(args[0], exc.errno or errno.EIO)
                elif _name.startswith("forget"):
                    reply_none(args[0])
            except BaseException:
                traceback.print_exc()
                if _name not in NO_REPLY:
                    reply_err(args[0], errno.EIO)
                elif _name.startswith("forget"):
                    reply_none(args[0])

        cfunc = CFUNCS[name](wrapper)
        keep.append(cfunc)
        setattr(ops, name, cfunc)
    return ops, keep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("--timeout", type=float, default=1.0, help="attr and entry timeout in seconds (default 1.0)")
    p.add_argument("--single-threaded", action="store_true", help="fuse_session_loop instead of _loop_mt")
    p.add_argument("--max-threads", type=int, default=10)
    p.add_argument("-o", dest="opts", action="append", default=[], help="extra mount options")
    p.add_argument("--counts", help="write the per-operation request counts to this JSON file at exit")
    p.add_argument("--no-pin-thread-state", action="store_true",
                   help="let ctypes create and destroy a Python thread state for every request (its default)")
    p.add_argument("-d", "--debug", action="store_true", help="libfuse's request log")
    a = p.parse_args(argv)

    source = os.path.abspath(a.source)
    if not os.path.isdir(source):
        print(f"source is not a directory: {source}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one O_PATH fd per cached inode
    os.umask(0)  # the kernel already applied the caller's umask

    fs = LowLevelPassthrough(source, a.timeout)
    counters: dict[str, itertools.count] = {}
    ops, keep = build_ops(fs, counters, pin=not a.no_pin_thread_state)

    opts = ["default_permissions", "fsname=" + source.replace(",", "\\,"), "subtype=passthrough_ll_py"] + a.opts
    args_list = [b"lowlevel_proto", b"-o", ",".join(opts).encode()] + ([b"-d"] if a.debug else [])
    argv_c = (c_char_p * (len(args_list) + 1))(*args_list, None)
    fargs = fuse_args(len(args_list), argv_c, 0)

    # libfuse only installs its handlers where the disposition is SIG_DFL; Python's SIGINT handler could never
    # run anyway while the main thread is inside the C loop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)

    se = session_new(byref(fargs), byref(ops), ctypes.sizeof(ops), None)
    if not se:
        print("fuse_session_new failed", file=sys.stderr)
        return 1
    ret = 1
    t0 = time.monotonic()
    try:
        if set_signal_handlers(se) != 0:
            return 1
        try:
            if session_mount(se, os.path.abspath(a.mountpoint).encode()) != 0:
                return 1
            try:
                if a.single_threaded:
                    ret = session_loop(se)
                else:
                    cfg = loop_cfg_create()
                    loop_cfg_set_max_threads(cfg, a.max_threads)
                    try:
                        ret = session_loop_mt(se, cfg)
                    finally:
                        loop_cfg_destroy(cfg)
            finally:
                session_unmount(se)
        finally:
            remove_signal_handlers(se)
    finally:
        session_destroy(se)
        counts = {name: next(c) for name, c in counters.items()}
        counts = {k: v for k, v in sorted(counts.items()) if v}
        if a.counts:
            with open(a.counts, "w") as f:
                json.dump({"counts": counts, "total": sum(counts.values()), "seconds": time.monotonic() - t0,
                           "inodes_left": len(fs.inodes)}, f, indent=1)
        del keep
    # fuse_session_loop*: 0 after unmount, the signal number after SIGINT/SIGTERM/SIGHUP, -errno on failure
    return 0 if ret >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
