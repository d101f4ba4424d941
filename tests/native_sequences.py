"""Operation sequences that once hung the mount or lost data, run as `python native_sequences.py NAME ROOT`.

Each prints its observable results as one JSON line, so that the test can run it on a plain directory and
through the mount (in a child process with a time limit) and require the same output.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SIZE = 1 << 20
PAGE = 4096


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def concurrent_reads(root: str) -> list[Any]:
    """Two readers of two names of one file at once, through the page cache (this once hung in both reads)."""
    data = os.urandom(SIZE)
    write_file(f"{root}/f", data)
    os.link(f"{root}/f", f"{root}/g")
    for _ in range(10):
        readers = [subprocess.Popen(["cat", f"{root}/{name}"], stdout=subprocess.PIPE) for name in ("f", "g")]
        outputs = [r.communicate()[0] for r in readers]
        if outputs != [data, data]:
            return ["differ", [len(o) for o in outputs]]
    return ["same"]


def mmap_store_then_read_other_name(root: str) -> list[Any]:
    """A store through mmap of one name, read through another before any msync: natively the same page."""
    write_file(f"{root}/f", os.urandom(4 * PAGE))
    os.link(f"{root}/f", f"{root}/g")
    fd = os.open(f"{root}/f", os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as m:
            m[:5] = b"HELLO"
            g = os.open(f"{root}/g", os.O_RDONLY)
            try:
                seen = os.pread(g, 5, 0)
            finally:
                os.close(g)
    finally:
        os.close(fd)
    return [seen.decode()]


HIDDEN = ".fuse_hidden0123456789abcdef"


def rename_to_hidden_looking_name(root: str) -> list[Any]:
    write_file(f"{root}/a", b"precious")
    renamed = outcome(lambda: os.rename(f"{root}/a", f"{root}/{HIDDEN}"))
    listed = sorted(os.listdir(root))
    content = outcome(lambda: open(f"{root}/{HIDDEN}", "rb").read().decode())
    back = outcome(lambda: os.rename(f"{root}/{HIDDEN}", f"{root}/a"))
    return [renamed, listed, content, back, sorted(os.listdir(root)), open(f"{root}/a").read()]


def rename_open_hidden_looking_name(root: str) -> list[Any]:
    """The same with the file open while it is renamed, and closed afterwards."""
    write_file(f"{root}/a", b"precious")
    fd = os.open(f"{root}/a", os.O_RDWR)
    renamed = outcome(lambda: os.rename(f"{root}/a", f"{root}/{HIDDEN}"))
    os.pwrite(fd, b"P", 0)
    os.close(fd)
    return [renamed, sorted(os.listdir(root)), open(f"{root}/{HIDDEN}").read()]


def rename_onto_own_link(root: str) -> list[Any]:
    """rename(a, b) where a and b are links of one file and b is open: POSIX makes it do nothing."""
    write_file(f"{root}/a", b"x")
    os.link(f"{root}/a", f"{root}/b")
    fd = os.open(f"{root}/b", os.O_RDONLY)
    try:
        renamed = outcome(lambda: os.rename(f"{root}/a", f"{root}/b"))
        listed = sorted(os.listdir(root))
        links = [os.stat(f"{root}/{n}").st_nlink for n in listed]
        fd_links = os.fstat(fd).st_nlink
    finally:
        os.close(fd)
    return [renamed, listed, links, fd_links, sorted(os.listdir(root))]


def open_unlinked_with_other_name(root: str) -> list[Any]:
    write_file(f"{root}/g", b"01234")
    os.link(f"{root}/g", f"{root}/h")
    fd = os.open(f"{root}/g", os.O_RDWR)
    try:
        os.unlink(f"{root}/g")
        links = os.fstat(fd).st_nlink
        before = os.stat(f"{root}/h").st_size
        os.pwrite(fd, b"GROWN", 5)
        after = [os.stat(f"{root}/h").st_size, os.fstat(fd).st_size, os.stat(f"{root}/h").st_nlink]
        os.fchmod(fd, 0o600)
        mode = oct(os.stat(f"{root}/h").st_mode & 0o777)
        content = open(f"{root}/h", "rb").read().decode()
    finally:
        os.close(fd)
    return [links, before, after, mode, content, sorted(os.listdir(root))]


# -- several names of one file used at once, for a few seconds ---------------------------------------------------
NAMES = ("f", "g", "h")
REGIONS = 8  # region k of the file is written by writer k only: the final bytes are known
REGION = SIZE // REGIONS
SECONDS = float(os.environ.get("FPT_RACE_SECONDS", "3"))


def _writer(root: str, name: str, region: int, use_mmap: bool, until: float) -> None:
    fd = os.open(f"{root}/{name}", os.O_RDWR)
    try:
        start = region * REGION
        mark = bytes([region + 1])
        m = mmap.mmap(fd, 0) if use_mmap else None
        i = 0
        while time.monotonic() < until:
            off = start + (i * 3 * PAGE) % REGION
            if m is not None:
                m[off:off + 512] = mark * 512
            else:
                os.pwrite(fd, mark * 512, off)
            i += 1
        if m is not None:
            m[start:start + REGION] = mark * REGION
            m.close()
        else:
            os.pwrite(fd, mark * REGION, start)
    finally:
        os.close(fd)


def _reader(root: str, name: str, use_mmap: bool, until: float) -> None:
    fd = os.open(f"{root}/{name}", os.O_RDONLY)
    try:
        m = mmap.mmap(fd, 0, prot=mmap.PROT_READ) if use_mmap else None
        i = 0
        while time.monotonic() < until:
            if m is not None:
                _ = m[(i * PAGE * 5) % SIZE]
            else:
                os.pread(fd, 1 << 17, (i * PAGE * 5) % SIZE)
                os.stat(f"{root}/{name}")
            i += 1
        if m is not None:
            m.close()
    finally:
        os.close(fd)


def role(args: list[str]) -> None:
    """One participant run as a process of its own: writer ROOT NAME REGION MMAP UNTIL | reader ROOT NAME MMAP UNTIL."""
    kind, root, name, *rest = args
    # UNTIL is a duration from now: processes start at slightly different times
    if kind == "writer":
        _writer(root, name, int(rest[0]), rest[1] == "1", time.monotonic() + float(rest[2]))
    else:
        _reader(root, name, rest[0] == "1", time.monotonic() + float(rest[1]))


def concurrent_names(root: str) -> list[Any]:
    """Writers and readers on three names of one file, threads and processes, write(2) and mmap."""
    write_file(f"{root}/f", bytes(SIZE))
    os.link(f"{root}/f", f"{root}/g")
    os.link(f"{root}/f", f"{root}/h")
    until = time.monotonic() + SECONDS
    threads = [threading.Thread(target=_writer, args=(root, NAMES[k % 3], k, k % 2 == 1, until)) for k in range(4)]
    threads += [threading.Thread(target=_reader, args=(root, name, name == "h", until)) for name in NAMES]
    procs = [subprocess.Popen([sys.executable, __file__, "role", "writer", root, NAMES[k % 3], str(k),
                               "1" if k % 2 else "0", str(SECONDS)]) for k in range(4, REGIONS)]
    procs += [subprocess.Popen([sys.executable, __file__, "role", "reader", root, name, "1" if name == "f" else "0",
                                str(SECONDS)]) for name in NAMES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [p.wait() for p in procs]
    expected = b"".join(bytes([k + 1]) * REGION for k in range(REGIONS))
    seen = {}
    for name in NAMES:
        with open(f"{root}/{name}", "rb") as f:
            seen[name] = f.read() == expected
        st = os.stat(f"{root}/{name}")
        seen[name + " size, links"] = [st.st_size, st.st_nlink]
    return [codes, seen]


SEQUENCES: dict[str, Callable[[str], list[Any]]] = {
    f.__name__: f for f in (concurrent_reads, mmap_store_then_read_other_name, rename_to_hidden_looking_name,
                            rename_open_hidden_looking_name, rename_onto_own_link, open_unlinked_with_other_name,
                            concurrent_names)
}

if __name__ == "__main__":
    if sys.argv[1] == "role":
        role(sys.argv[2:])
    else:
        print(json.dumps(SEQUENCES[sys.argv[1]](sys.argv[2])))
