"""`fuse-passthrough demo`: the original example's "What happens when I...?" walks, live on this kernel.

A sample tree is created in a temporary directory and mounted privately; each walk runs as `sh -c CMD` in the
mount. Between walks the demo looks up a marker name, so the trace divides cleanly into one slice per walk.
Each slice is printed with a short reason for every kind of operation in it, and the five walks of the
original example are compared with the sequences it recorded.

The walks run twice, on two copies of the sample: in strict mode (`-o timeout=0`, every lookup reaches the
daemon, as in the original example) and on a default mount, where the kernel caches names and attributes; the
two traces are shown side by side, so what the cache saves (and what a cached trace does not show) is visible.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, TextIO

from .arguments import PROG, Parser
from .mount import check_environment
from .private_mount import PrivateMount
from .tracing.formats import format_text


@dataclass
class Walk:
    title: str
    command: str | None  # None: the mount itself
    seed: list[str] | None = None  # the original example's recorded sequence (op names), if it had this walk
    note: str = ""


WALKS = [
    Walk("Mount the file system", None, ["access", "getattr", "getattr"],
         "The original example saw access('/', 4) and getattr('/.Trash'), getattr('/.Trash-1000'). The Trash "
         "lookups came from a desktop's trash monitor (gvfs), not from the kernel: on a machine without one "
         "they do not happen. access() is not sent at all here: the mount uses default_permissions, so the "
         "kernel checks permissions itself from the attributes it already has."),
    Walk("Change to the root directory", "cd . && pwd", ["getattr", "access"],
         "The original saw access('/', 1) for the search permission; with default_permissions the kernel "
         "checks it itself."),
    Walk("List the root directory", "ls -l", ["getattr", "access", "opendir", "readdir", "getattr",
                                             "releasedir"],
         "The original saw opendir and releasedir around the readdir. Here the first opendir is answered ENOSYS "
         "(FUSE_NO_OPENDIR_SUPPORT): the kernel then opens directories itself, sends no opendir or releasedir "
         "again, and keeps the listing until the directory changes (through the mount, or in SOURCE: the "
         "watcher tells it). readdirplus gives each name with its attributes, so ls -l needs no getattr per file."),
    Walk("Create a file", "echo foo > bar", ["getattr", "create", "getattr", "flush", "getxattr", "write",
                                             "flush", "release"],
         "The original's getxattr('security.capability') before the write is the kernel checking for file "
         "capabilities that the write must remove. This filesystem takes that on (FUSE_HANDLE_KILLPRIV_V2: it "
         "writes as the caller, so SOURCE clears set-id bits and capabilities itself) and the kernel asks once "
         "per file instead of before every write. The original's two flushes (one per close() of a descriptor "
         "of the file) are gone where SOURCE is ext4, xfs, btrfs or tmpfs: their close() has nothing to report, "
         "so the file is opened with FOPEN_NOFLUSH and the kernel does not ask; on NFS it would."),
    Walk("Read a file", "cat bar", ["getattr", "open", "read", "getattr", "flush", "release"],
         "The original saw a flush before the release, as for every close(). This filesystem opens a file read "
         "only with FOPEN_NOFLUSH: closing a descriptor that cannot have written has nothing to report, so the "
         "kernel does not ask (a local filesystem has no call there either)."),
    Walk("Make a directory", "mkdir notes"),
    Walk("Move a file", "mv bar notes/bar.txt"),
    Walk("Make a symbolic link", "ln -s notes/bar.txt shortcut"),
    Walk("Follow the link", "cat shortcut"),
    Walk("Change permissions", "chmod 600 notes/bar.txt"),
    Walk("Update the times", "touch notes/bar.txt"),
    Walk("Copy a file", "cp notes/bar.txt copy.txt"),
    Walk("Cut a file short", "truncate -s 2 copy.txt"),
    Walk("Make a hard link", "ln copy.txt hardlink.txt"),
    Walk("Set an extended attribute", "setfattr -n user.colour -v blue copy.txt"),
    Walk("Remove files", "rm copy.txt hardlink.txt shortcut"),
]

# Why the kernel sends each operation; specific cases first.
def explain(event: dict[str, Any], seen_before: dict[str, int]) -> str | None:
    op, args, err = event["op"], event["args"], event["errno"]
    if op == "getattr" and err == "ENOENT":
        return ("getattr -> ENOENT: the kernel looks a name up before creating it (libfuse turns LOOKUP into "
                "getattr on the path); 'does not exist' is the answer that allows the create.")
    if op == "opendir" and err == "ENOSYS":
        return ("opendir -> ENOSYS: on purpose. The kernel takes it as 'open directories yourself' and never "
                "sends opendir or releasedir again on this mount; readdir comes without a handle.")
    if op == "lookup" and err == "ENOENT":
        return ("lookup -> ENOENT: the kernel looks a name up before creating it; 'does not exist' is the "
                "answer that allows the create.")
    if op == "getattr":
        return ("getattr: the kernel revalidates what it knows of a path before using it; in strict mode "
                "(attribute and entry timeouts of 0, the left column) it asks every time it needs them; a "
                "default mount caches the answers (right column).")
    if op == "getxattr" and args.get("name") == "security.capability":
        return ("getxattr('security.capability'): before changing a file's data the kernel checks whether "
                "it carries file capabilities that a write must remove (as it clears setuid bits).")
    if op == "getxattr":
        return (f"getxattr('{args.get('name')}'): ls -l asks for SELinux labels and POSIX ACLs to decide "
                "whether to print '.' or '+' after the mode; ENODATA means there are none.")
    if op == "flush" and seen_before.get(f"flush {args.get('fh')}", 0) >= 1:
        return ("flush (again, same handle): flush is sent at every close() of a descriptor, not once per "
                "open — for `>` the shell dup2()s the new file onto stdout and closes the original (first "
                "flush), then closes stdout after echo (second).")
    if op == "release" and event["pid"] == 0:
        return ("release from [kernel]: when the last descriptor of an open file goes away the kernel sends "
                "release on its own, asynchronously, so no process is attached to it (pid 0).")
    return _GENERIC.get(op)


_GENERIC = {
    "lookup": "lookup: the kernel asks for a name in a directory and learns its inode (and its attributes).",
    "forget": "forget: the kernel dropped an inode from its cache; the daemon may drop its node too.",
    "forget_multi": "forget_multi: several forgets in one request (BATCH_FORGET).",
    "readdirplus": "readdirplus: the names with their attributes, each one a lookup too.",
    "tmpfile": "tmpfile: open(O_TMPFILE), an unnamed file in a directory.",
    "init": "init: the kernel and libfuse agree on the protocol and capabilities when the mount is made.",
    "create": "create: open(O_CREAT) on a name that does not exist — create and open in one request.",
    "write": "write: the data (only its length is recorded, never the bytes), at an offset, to a handle.",
    "flush": "flush: sent at close() of each descriptor that may have written, so the filesystem can report "
             "late errors (not for read-only opens, nor where SOURCE's close() reports nothing: FOPEN_NOFLUSH).",
    "release": "release: the last descriptor of an open file is gone; the handle is freed.",
    "open": "open: a handle for an existing file, with the caller's access mode.",
    "read": "read: the kernel asks for whole pages (and reads ahead), not just what the program asked for.",
    "opendir": "opendir: a handle to list a directory.",
    "readdir": "readdir: the names (and inode numbers and types) in the directory.",
    "releasedir": "releasedir: the directory handle is closed.",
    "mkdir": "mkdir: a new directory, with the caller's mode after their umask.",
    "rename": "rename: both names were looked up first; mv passes RENAME_NOREPLACE so it never replaces a "
              "file that appeared after it checked.",
    "symlink": "symlink: a link whose content is the target text, unresolved.",
    "readlink": "readlink: the kernel resolves symlinks itself: it asks for the target text and walks it.",
    "chmod": "chmod: a setattr of the mode.",
    "utimens": "utimens: a setattr of the times (UTIME_NOW = 'now', as touch asks).",
    "copy_file_range": "copy_file_range: cp asks the kernel to copy inside the filesystem; no data passes "
                       "through the program.",
    "truncate": "truncate: a setattr of the size.",
    "link": "link: a new name for an existing inode; its link count goes up.",
    "setxattr": "setxattr: an extended attribute is set (only the value's length is recorded).",
    "unlink": "unlink: a name is removed; the data goes when no name and no open handle remain.",
    "statfs": "statfs: capacity and free space of the filesystem.",
    "lseek": "lseek: SEEK_DATA/SEEK_HOLE asks where data is — cp uses it to copy sparse files efficiently.",
    "fsync": "fsync: the program asked for its data to be on stable storage.",
    "listxattr": "listxattr: the names of the extended attributes.",
    "access": "access: a permission check asked by the program (access(2)).",
    "fallocate": "fallocate: space reserved or a range changed without writing data.",
}

SAMPLE_TREE = {"hello.txt": "Hello from the source directory.\n", "docs/guide.md": "# Guide\n"}


def _line(event: dict[str, Any] | None) -> str:
    """A compact event line: the call, its result, and who made it."""
    assert event is not None
    text = format_text(event).rstrip("\n")
    call, _, rest = text.partition("   ")
    who = rest.split("  ", 1)[1].split(" uid=")[0] if "  " in rest else ""
    return f"  {call:<92} {who}"


def run_demo(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the sample source directory and print its path")
    args = p.parse_args(argv)
    check_environment()
    base = tempfile.mkdtemp(prefix="fuse-passthrough-demo-")
    src = os.path.join(base, "source")
    for rel, content in SAMPLE_TREE.items():
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        with open(os.path.join(src, rel), "w") as f:
            f.write(content)
    cached_src = os.path.join(base, "source-cached")
    shutil.copytree(src, cached_src)
    out = sys.stdout
    runs = []
    for label, source, daemon_args in (("strict mode, -o timeout=0", src, ["-o", "timeout=0"]),
                                       ("default mount, cached", cached_src, [])):
        pm = PrivateMount(source, daemon_args)
        try:
            out.write(f"Sample source: {source}\nMounting it at {pm.mountpoint} ({label}) ...\n")
            pm.start()
            runs.append(_run_walks(pm, out))
        finally:
            pm.stop()
            pm.cleanup()
    _print_walks(runs[0], out, cached=runs[1])
    if args.keep:
        out.write(f"\nThe sample source is kept at {src}\n")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _run_walks(pm: PrivateMount, out: TextIO) -> list[tuple[Walk, list[dict[str, Any]]]]:
    me = os.getpid()
    slices: list[tuple[Walk, list[dict[str, Any]]]] = []
    have_setfattr = shutil.which("setfattr") is not None
    for i, walk in enumerate(WALKS):
        command = walk.command
        if command and command.startswith("setfattr") and not have_setfattr:
            # this interpreter, not whatever `python3` is on PATH (a pyenv shim would add its own processes)
            command = (f"{shlex.quote(sys.executable)} -c "
                       "\"import os; os.setxattr('copy.txt', 'user.colour', b'blue')\"")
        if command:
            # The shell itself changes into the mount, so every operation belongs to the walk's processes.
            subprocess.run(["sh", "-c", f'cd "$1" && {command}', "sh", pm.mountpoint],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05)  # let asynchronous releases arrive inside this walk's slice
        marker = f".demo-walk-{i}"
        try:
            os.stat(os.path.join(pm.mountpoint, marker))
        except FileNotFoundError:
            pass
        events = _events_until(pm, f"/{marker}")
        slices.append((walk, [e for e in events if e["pid"] != me]))
    return slices


def _events_until(pm: PrivateMount, marker: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The events since the previous marker, once this marker's lookup has been written."""
    deadline = time.monotonic() + timeout
    while True:
        events = list(pm.events())
        idx = [i for i, e in enumerate(events) if e["path"] == marker]
        if idx or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    end = idx[0] if idx else len(events)
    prev = [i for i, e in enumerate(events[:end]) if (e["path"] or "").startswith("/.demo-walk-")]
    start = prev[-1] + 1 if prev else 0
    return events[start:end]


def _call(event: dict[str, Any], width: int) -> str:
    text = format_text(event).rstrip("\n").partition("   ")[0]
    return text if len(text) <= width else text[: width - 1] + "…"


def _side_by_side(strict: list[dict[str, Any]], cached: list[dict[str, Any]], out: TextIO) -> None:
    width = 58
    out.write(f"  Side by side: {len(strict)} requests in strict mode, {len(cached)} on a default (cached) mount\n")
    out.write(f"    {'strict (-o timeout=0)':<{width}} | cached (default)\n")
    for i in range(max(len(strict), len(cached))):
        left = _call(strict[i], width) if i < len(strict) else ""
        right = _call(cached[i], width) if i < len(cached) else ""
        out.write(f"    {left:<{width}} | {right}\n")


def _print_walks(slices: list[tuple[Walk, list[dict[str, Any]]]], out: TextIO,
                 cached: list[tuple[Walk, list[dict[str, Any]]]] | None = None) -> None:
    for n, (walk, events) in enumerate(slices):
        out.write(f"\n=== {walk.title}: {walk.command or 'fuse-passthrough SOURCE MOUNTPOINT'}\n")
        if not events:
            out.write("  (no operations)\n")
        previous, repeats = None, 0
        for e in events + [None]:  # identical consecutive lines are shown once, with a count
            line = _line(e) if e is not None else None
            if line == previous:
                repeats += 1
                continue
            if previous is not None:
                out.write(previous + (f"  (x{repeats + 1})" if repeats else "") + "\n")
            previous, repeats = line, 0
        seen: dict[str, int] = {}
        reasons: list[str] = []
        for e in events:
            reason = explain(e, seen)
            key = f"{e['op']} {e['args'].get('fh')}"
            seen[key] = seen.get(key, 0) + 1
            if reason and reason not in reasons:
                reasons.append(reason)
        if reasons:
            out.write("  Why:\n")
            for r in reasons:
                out.write(f"   - {r}\n")
        if walk.seed is not None:
            # The seed's libfuse (the high-level API) showed the kernel's LOOKUP as a getattr of the path.
            today = ["getattr" if e["op"] == "lookup" else e["op"] for e in events]
            out.write(f"  The original example recorded: {', '.join(walk.seed)}\n")
            if any(e["op"] == "lookup" for e in events):
                out.write("  (Its libfuse showed each lookup as getattr of the path; counted so below.)\n")
            if today == walk.seed:
                out.write("  Today's kernel sends exactly the same sequence.\n")
            else:
                missing = [op for op in dict.fromkeys(walk.seed) if op not in today]
                new = [op for op in dict.fromkeys(today) if op not in walk.seed]
                diff = []
                if missing:
                    diff.append(f"no {', '.join(missing)} any more")
                if new:
                    diff.append(f"new: {', '.join(new)}")
                if len(today) != len(walk.seed):
                    diff.append(f"{len(today)} operations instead of {len(walk.seed)}")
                out.write(f"  This kernel differs: {'; '.join(diff) or 'same operations, another order'}.\n")
        if walk.note:
            out.write(f"  Note: {walk.note}\n")
        if cached is not None:
            _side_by_side(events, cached[n][1], out)
    if cached is not None:
        total_strict = sum(len(e) for _, e in slices)
        total_cached = sum(len(e) for _, e in cached)
        out.write(f"\nAll walks: {total_strict} requests in strict mode, {total_cached} with the default cache. "
                  "A cached mount's trace shows what reached the filesystem: stats and lookups the kernel "
                  "answered from its cache are not in it (use -o timeout=0 to see every one).\n")
