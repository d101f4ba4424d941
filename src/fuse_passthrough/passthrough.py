"""The passthrough: every FUSE operation mapped to the matching syscall on the source directory.

Paths from libfuse ("/a/b/c") are resolved beneath a directory fd of the source root, never by joining strings:
the parent directory ("a/b") is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a directory that
was swapped for a symlink in the source after the kernel's lookup cannot lead outside it, and paths longer than
PATH_MAX work. The last component is then used with the *at() form of the call and never followed
(`follow_symlinks=False`, O_NOFOLLOW): the kernel resolves symlinks itself and never asks us to.

This module knows nothing about tracing; wrap it with `fuse_passthrough.tracing.TracingOperations`.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from . import syscalls
from .binding import HIDDEN_NAME, BackingFiles, Operations, fuse_context, request_id
from .credentials import CallerCredentials, kills_privileges

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RESOLVE = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
_PATH_MAX = 4096


def _type_of(entry: os.DirEntry[str]) -> int:
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


# stat_result fields beyond its 10-item sequence (float and ns times, blksize, rdev...), set by name.
_STAT_EXTRA = tuple(f for f in dir(os.stat_result) if f.startswith("st_") and f not in
                    ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size"))


def _one_more_link(st: os.stat_result) -> os.stat_result:
    """libfuse subtracts one from the link count of a file it hid (its own hiding keeps the hidden name in the
    source); ours unlinks the name, so the count is already right and gets one added back."""
    fields = list(st)
    fields[3] += 1
    return os.stat_result(fields, {f: getattr(st, f) for f in _STAT_EXTRA})


class Passthrough(Operations):  # type: ignore[misc]
    """Mirror `source` with each operation a short method over one syscall.

    `getattr` returns os.stat_result (all fields, ns times); `utimens` takes raw timespecs; `rename` takes the
    renameat2 flags. Objects are created, and permission-sensitive changes made, with the caller's credentials
    (see `credentials.py`) when running as root.
    """

    use_ns = True  # tells mfusepy we take nanosecond times

    def __init__(self, source: str, *, caller_credentials: bool | None = None,
                 kernel_passthrough: bool = False) -> None:
        self.source = os.path.realpath(source)
        # Kernel passthrough: open files are registered with the kernel, which then reads and writes them itself
        # (binding.BackingFiles; the binding enables it at init and hands the backing ids to the kernel).
        self.backing_files = BackingFiles() if kernel_passthrough else None
        self.root_fd = os.open(self.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.as_caller = CallerCredentials(caller_credentials)
        self.as_caller_ids = CallerCredentials(caller_credentials, groups=False)
        self._openat2 = True
        # libfuse's ".fuse_hidden..." path of an unlinked open file -> O_PATH fd keeping that file (see _hide)
        self._unlinked: dict[str, int] = {}
        self._unlinked_lock = threading.Lock()
        # request id -> hidden-looking path libfuse found free in that request (it is about to hide a file there)
        self._hide_probes: dict[int, str] = {}
        # request id -> hidden path whose attributes libfuse is changing in that request (it replies with our
        # getattr's link count as it is, where its GETATTR subtracts the hidden name)
        self._setattr_requests: dict[int, str] = {}
        # request id -> (path, (st_dev, st_ino)) of the file libfuse hid in that request to rename over its name
        self._hidden_for_rename: dict[int, tuple[str, tuple[int, int]]] = {}

    # -- path resolution -------------------------------------------------------------------------------------
    def _open_dir(self, rel: str) -> int:
        """O_PATH fd of the directory `rel` beneath the root, following no symlink on the way."""
        if self._openat2 and len(rel) < _PATH_MAX:
            try:
                return syscalls.openat2(self.root_fd, rel, _DIR_FLAGS, 0, _RESOLVE)
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp policy without openat2
                    raise
                self._openat2 = False
        fd = self.root_fd
        try:
            for part in rel.split("/"):
                nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                if fd != self.root_fd:
                    os.close(fd)
                fd = nfd
        except OSError:
            if fd != self.root_fd:
                os.close(fd)
            raise
        return fd

    def _at(self, path: str) -> tuple[int, str]:
        """(directory fd, last component) for `path`; close the fd with `_done` unless it is the root fd."""
        if "/." in path or "//" in path:  # the kernel never sends "." or ".." components; refuse them anyway
            if any(p in ("", ".", "..") for p in path[1:].split("/")) and path != "/":
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        head, _, name = path[1:].rpartition("/")
        if not head:
            return self.root_fd, name or "."
        return self._open_dir(head), name

    def _done(self, fd: int) -> None:
        if fd != self.root_fd:
            os.close(fd)

    def _proc_path(self, path: str) -> tuple[int, str]:
        """An O_PATH fd of `path` itself (not followed) and its /proc/self/fd name for path-only calls."""
        hidden = self._unlinked.get(path)
        if hidden is not None:
            fd = os.dup(hidden)
            return fd, f"/proc/self/fd/{fd}"
        d, name = self._at(path)
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        finally:
            self._done(d)
        return fd, f"/proc/self/fd/{fd}"

    # -- open files that were unlinked -----------------------------------------------------------------------
    # libfuse keeps an open file that is unlinked (or renamed over) reachable by renaming it to
    # ".fuse_hidden<16 hex>" in the same directory; the source would keep a stray name, its link count would
    # not drop and rmdir of the directory would fail with ENOTEMPTY. -o hard_remove avoids that but makes
    # fstat() and fchmod() of such files fail with ESTALE. Instead, we really unlink the name and keep an
    # O_PATH fd of the file under libfuse's hidden path; path-based calls on that path use the fd, and
    # libfuse's final unlink of it (at the last close) just drops the fd.
    # Only libfuse's own rename is a hide, never a program's rename to such a name: libfuse first makes sure the
    # hidden name is free (a getattr that fails with ENOENT) within the same request.
    def _probed(self, path: str) -> None:
        """getattr of `path` found nothing: if it looks like a hidden name, libfuse may be about to hide there."""
        if HIDDEN_NAME.fullmatch(path.rpartition("/")[2]) is not None and (req := request_id()):
            with self._unlinked_lock:
                if len(self._hide_probes) > 1024:  # probes by programs' lookups, never followed by a hide
                    self._hide_probes.clear()
                self._hide_probes[req] = path

    def _is_hide(self, new: str, flags: int) -> bool:
        if flags or not self._hide_probes or HIDDEN_NAME.fullmatch(new.rpartition("/")[2]) is None:
            return False
        req = request_id()
        with self._unlinked_lock:
            return bool(req) and self._hide_probes.get(req) == new and self._hide_probes.pop(req) == new

    def _hide(self, old: str, new: str) -> None:
        fd, _ = self._proc_path(old)
        try:
            st = os.fstat(fd)
            self.unlink(old)
        except BaseException:
            os.close(fd)
            raise
        with self._unlinked_lock:
            self._unlinked[new] = fd
            if len(self._hidden_for_rename) > 1024:
                self._hidden_for_rename.clear()
            self._hidden_for_rename[request_id()] = (old, (st.st_dev, st.st_ino))

    def _renames_onto_itself(self, old: str, new: str) -> bool:
        """libfuse hid `new` in this request to rename `old` over it: True when both are one file (natively a
        rename that does nothing); its name `new` is then put back."""
        with self._unlinked_lock:
            hidden = self._hidden_for_rename.pop(request_id(), None)
        if hidden is None or hidden[0] != new:
            return False
        d, name = self._at(old)
        try:
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
        finally:
            self._done(d)
        if (st.st_dev, st.st_ino) != hidden[1]:
            return False
        self.link(new, old)
        return True

    def _hidden_inside(self, path: str) -> bool:
        prefix = path + "/"
        return any(k.startswith(prefix) for k in self._unlinked)

    def _move_hidden(self, old: str, new: str, exchange: bool) -> None:
        """A directory was renamed: libfuse now names the hidden files inside it by the new path."""
        if not self._unlinked:
            return
        with self._unlinked_lock:
            moved = {}
            for a, b in ((old, new), (new, old)) if exchange else ((old, new),):
                for k in [k for k in self._unlinked if k.startswith(a + "/")]:
                    moved[b + k[len(a):]] = self._unlinked.pop(k)
            self._unlinked.update(moved)

    def _hidden_path(self, path: str) -> str | None:
        fd = self._unlinked.get(path)
        return None if fd is None else f"/proc/self/fd/{fd}"

    def _setattr(self, path: str) -> None:
        """chmod, chown, truncate or utimens of `path`: part of a SETATTR request, which libfuse answers with a
        getattr of its own."""
        if self._unlinked and path in self._unlinked:
            with self._unlinked_lock:
                if len(self._setattr_requests) > 1024:
                    self._setattr_requests.clear()
                self._setattr_requests[request_id()] = path

    # -- lifecycle --------------------------------------------------------------------------------------------
    def init(self, path: str) -> None:
        # The kernel applies the caller's umask before sending a mode; ours must not mask it a second time.
        os.umask(0)

    def destroy(self, path: str) -> None:
        pass

    # -- attributes -------------------------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> os.stat_result:
        hidden = self._unlinked.get(path) if self._unlinked else None
        if hidden is not None:
            st = os.fstat(hidden if fh is None else fh)
            with self._unlinked_lock:
                in_setattr = self._setattr_requests.pop(request_id(), None) == path
            return st if in_setattr else _one_more_link(st)
        if fh is not None:
            return os.fstat(fh)
        d, name = self._at(path)
        try:
            return os.stat(name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            self._probed(path)
            raise
        finally:
            self._done(d)

    def access(self, path: str, amode: int) -> int:
        d, name = self._at(path)
        try:
            with self.as_caller:
                ok = os.access(name, amode, dir_fd=d, effective_ids=True, follow_symlinks=False)
        finally:
            self._done(d)
        if not ok:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        return 0

    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        self._setattr(path)
        # Through /proc/self/fd: os.chmod cannot leave a symlink unfollowed, and _kills_privileges needs a path.
        fd, proc = (None, f"/proc/self/fd/{fh}") if fh is not None else self._proc_path(path)
        try:
            try:
                with self.as_caller:
                    os.chmod(proc, mode)
            except PermissionError:
                if not self._kills_privileges(proc, mode):
                    raise
                os.chmod(proc, mode)
        finally:
            if fd is not None:
                os.close(fd)
        return 0

    def _kills_privileges(self, proc: str, mode: int) -> bool:
        return kills_privileges(proc, mode, self.as_caller)

    def chown(self, path: str, uid: int, gid: int, fh: int | None = None) -> int:
        self._setattr(path)
        with self.as_caller:
            if fh is not None:
                os.fchown(fh, uid, gid)
                return 0
            if (hidden := self._hidden_path(path)) is not None:
                os.chown(hidden, uid, gid)
                return 0
            d, name = self._at(path)
            try:
                os.chown(name, uid, gid, dir_fd=d, follow_symlinks=False)
            finally:
                self._done(d)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._setattr(path)
        # As the caller: the source clears setuid/setgid as it would for them.
        with self.as_caller:
            if fh is not None:
                os.ftruncate(fh, length)
                return 0
            if (hidden := self._hidden_path(path)) is not None:
                os.truncate(hidden, length)
                return 0
            d, name = self._at(path)
            try:
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            finally:
                self._done(d)
            try:
                os.ftruncate(fd, length)
            finally:
                os.close(fd)
        return 0

    def utimens(self, path: str, times: tuple[syscalls.Timespec, syscalls.Timespec] | None = None,
                fh: int | None = None) -> int:
        self._setattr(path)
        with self.as_caller:
            if fh is not None:
                syscalls.utimensat(fh, None, times)
                return 0
            if (hidden := self._hidden_path(path)) is not None:
                syscalls.utimensat(syscalls.AT_FDCWD, hidden, times)
                return 0
            d, name = self._at(path)
            try:
                syscalls.utimensat(d, name, times, syscalls.AT_SYMLINK_NOFOLLOW)
            finally:
                self._done(d)
        return 0

    def readlink(self, path: str) -> str:
        d, name = self._at(path)
        try:
            return os.readlink(name, dir_fd=d)
        finally:
            self._done(d)

    def statfs(self, path: str) -> dict[str, int]:
        fd, _ = self._proc_path(path)
        try:
            sv = os.fstatvfs(fd)
        finally:
            os.close(fd)
        return {
            "f_bsize": sv.f_bsize, "f_frsize": sv.f_frsize, "f_blocks": sv.f_blocks, "f_bfree": sv.f_bfree,
            "f_bavail": sv.f_bavail, "f_files": sv.f_files, "f_ffree": sv.f_ffree, "f_favail": sv.f_favail,
            "f_fsid": sv.f_fsid, "f_flag": sv.f_flag, "f_namemax": sv.f_namemax,
        }

    # -- namespace --------------------------------------------------------------------------------------------
    def mknod(self, path: str, mode: int, dev: int) -> int:
        d, name = self._at(path)
        try:
            with self.as_caller:
                os.mknod(name, mode, dev, dir_fd=d)
        finally:
            self._done(d)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        d, name = self._at(path)
        try:
            with self.as_caller:
                os.mkdir(name, mode, dir_fd=d)
        finally:
            self._done(d)
        return 0

    def unlink(self, path: str) -> int:
        with self._unlinked_lock:
            hidden = self._unlinked.pop(path, None)
        if hidden is not None:  # libfuse's last close of a hidden file: its name is gone already
            os.close(hidden)
            return 0
        d, name = self._at(path)
        try:
            with self.as_caller:
                os.unlink(name, dir_fd=d)
        finally:
            self._done(d)
        return 0

    def rmdir(self, path: str) -> int:
        # libfuse's paths to open files unlinked in it would go (fstat, fchmod of them: ESTALE); it stays,
        # as with libfuse's own hiding, until they are closed.
        if self._hidden_inside(path):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path)
        d, name = self._at(path)
        try:
            with self.as_caller:
                os.rmdir(name, dir_fd=d)
        finally:
            self._done(d)
        return 0

    def symlink(self, path: str, target: str) -> int:
        """Create `path` as a symlink whose content is `target` (mfusepy's argument order)."""
        d, name = self._at(path)
        try:
            with self.as_caller:
                os.symlink(target, name, dir_fd=d)
        finally:
            self._done(d)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if self._is_hide(new, flags):
            self._hide(old, new)
            return 0
        if self._hidden_for_rename and self._renames_onto_itself(old, new):
            return 0
        d1, n1 = self._at(old)
        try:
            d2, n2 = self._at(new)
            try:
                with self.as_caller:
                    syscalls.renameat2(d1, n1, d2, n2, flags)
            finally:
                self._done(d2)
        finally:
            self._done(d1)
        self._move_hidden(old, new, bool(flags & syscalls.RENAME_EXCHANGE))
        return 0

    def link(self, path: str, existing: str) -> int:
        """Create the hard link `path` to `existing` (mfusepy's argument order)."""
        d1, n1 = self._at(existing)
        try:
            d2, n2 = self._at(path)
            try:
                with self.as_caller:
                    os.link(n1, n2, src_dir_fd=d1, dst_dir_fd=d2, follow_symlinks=False)
            finally:
                self._done(d2)
        finally:
            self._done(d1)
        return 0

    # -- files ------------------------------------------------------------------------------------------------
    # O_DIRECT is not passed on: data is copied through unaligned Python buffers, and the binding sets
    # direct_io so the mount's page cache is bypassed as the caller asked. O_NOFOLLOW: never leave via a symlink.
    _OPEN_CLEAR = ~os.O_DIRECT

    def open(self, path: str, flags: int) -> int:
        if (hidden := self._hidden_path(path)) is not None:  # e.g. open("/proc/PID/fd/N") of a hidden file
            with self.as_caller:
                return os.open(hidden, (flags & self._OPEN_CLEAR) | os.O_CLOEXEC)
        d, name = self._at(path)
        try:
            with self.as_caller:
                fd = os.open(name, (flags & self._OPEN_CLEAR) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        finally:
            self._done(d)
        return self._attach(fd)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
        d, name = self._at(path)
        try:
            with self.as_caller:
                fd = os.open(name, (flags & self._OPEN_CLEAR) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             stat.S_IMODE(mode), dir_fd=d)
        finally:
            self._done(d)
        return self._attach(fd)

    def _attach(self, fd: int) -> int:
        if self.backing_files is not None:
            try:
                # The kernel does the file's I/O with the credentials of the thread that registers it: the
                # caller's ids, as for the daemon's own writes.
                with self.as_caller_ids:
                    self.backing_files.attach(fd, fd)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        # As the caller, so the source clears setuid/setgid bits as it would for them (root keeps them).
        with self.as_caller_ids:
            return os.pwrite(fh, data, offset)

    def flush(self, path: str | None, fh: int) -> int:
        # What close() of one descriptor does on the source (e.g. NFS reports write errors here), without the
        # fsync the original example did. The handle stays open until release.
        os.close(os.dup(fh))
        return 0

    def release(self, path: str | None, fh: int) -> int:
        if self.backing_files is not None:
            self.backing_files.detach(fh)
        os.close(fh)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        syscalls.fallocate(fh, mode, offset, size)
        return 0

    def copy_file_range(self, path_in: str | None, fh_in: int, off_in: int, path_out: str | None, fh_out: int,
                        off_out: int, size: int, flags: int) -> int:
        if flags:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return os.copy_file_range(fh_in, fh_out, size, off_in, off_out)

    def lseek(self, path: str | None, fh: int, offset: int, whence: int) -> int:
        return os.lseek(fh, offset, whence)

    # -- directories ------------------------------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        d, name = self._at(path)
        try:
            with self.as_caller:
                return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        finally:
            self._done(d)

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        entries = [
            (".", {"st_ino": os.fstat(fh).st_ino, "st_mode": stat.S_IFDIR}, 0),
            ("..", {"st_ino": os.stat("..", dir_fd=fh).st_ino, "st_mode": stat.S_IFDIR}, 0),
        ]
        with os.scandir(fh) as it:  # scandir(fd) rewinds the shared descriptor when closed
            for e in it:
                entries.append((e.name, {"st_ino": e.inode(), "st_mode": _type_of(e)}, 0))
        return entries

    def releasedir(self, path: str | None, fh: int) -> int:
        os.close(fh)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    # -- extended attributes ----------------------------------------------------------------------------------
    # "trusted." needs CAP_SYS_ADMIN on the source; the daemon has it, the caller may not.
    @staticmethod
    def _privileged_xattr(name: str) -> bool:
        return name.startswith("trusted.") and fuse_context()[0] != 0

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        if self._privileged_xattr(name):
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
        fd, proc = self._proc_path(path)
        try:
            return os.getxattr(proc, name)
        finally:
            os.close(fd)

    def listxattr(self, path: str) -> list[str]:
        fd, proc = self._proc_path(path)
        try:
            names = os.listxattr(proc)
        finally:
            os.close(fd)
        return [n for n in names if not self._privileged_xattr(n)]

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        if self._privileged_xattr(name):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        fd, proc = self._proc_path(path)
        try:
            with self.as_caller:
                os.setxattr(proc, name, value, options)
        finally:
            os.close(fd)
        return 0

    def removexattr(self, path: str, name: str) -> int:
        if self._privileged_xattr(name):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        fd, proc = self._proc_path(path)
        try:
            with self.as_caller:
                os.removexattr(proc, name)
        finally:
            os.close(fd)
        return 0

    # Keep the unused mfusepy hooks off: POSIX and flock locks are arbitrated by the kernel (see README).
    lock = None
    flock = None

    def close(self) -> None:
        with self._unlinked_lock:
            for fd in self._unlinked.values():
                os.close(fd)
            self._unlinked.clear()
        os.close(self.root_fd)

