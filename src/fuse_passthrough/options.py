"""Every option in one table: the command-line flags of the mount and `trace`, and the `-o` mount options.

Each `Option` says its name, its type (a `Kind`: how a value is read, on the command line and after `-o`), its
default, its help, and where it applies: which commands take the flag, whether mount(8)/fstab may pass it (the
helper form, mount_helper.py), and who consumes it (`goes`): the kernel (handed to libfuse's -o, which passes it
on through fusermount3), the daemon's cache settings, the tracing options of the daemon, the daemon itself, or
nobody (accepted and ignored for mount(8), fstab and systemd).

From this table come the argparse parsers (`add_arguments`), the -o list of --help (`mount_options_help`), the
-o parsing and its one-line errors (`lookup`, `Kind.read`, used by mount.MountOptions) and the set of options a
mount(8) helper accepts (`HELPER_OPTIONS`).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .arguments import byte_size, comma_list, fault_rule, nonneg_int
from .errors import UsageError
from .faults.rules import KEYS as FAULT_KEYS

# Where an -o option goes (Option.goes).
KERNEL = "kernel"    # to libfuse's -o as it is: the kernel (and fusermount3) consume it
CONFIG = "cache"     # the daemon's cache settings: timeouts and open flags of its replies (MountOptions.config)
TRACE = "trace"      # the same as a tracing --option (MountOptions.trace, by the flag's dest)
DAEMON = "daemon"    # this program's own
IGNORED = "ignored"  # accepted and dropped: meant for mount(8), fstab or systemd

COMMANDS = ("mount", "trace")
# argparse groups of the flags, in the order --help shows them (None: the default "options" group).
GROUPS = {
    "tracing": "tracing",
    "filters": "filters (an event is kept when it passes all of them)",
    "faults": "fault injection (see README: Fault injection)",
}


class DefaultSeconds(float):
    """A timeout nobody gave: the daemon may lengthen it where its watcher sees every change (a value the user
    gives is read as a plain float and always wins)."""


# Cache timeouts of a default mount (seconds): the kernel keeps attributes and names this long; changes made
# through the mount are invalidated at once, changes made directly in SOURCE show within it.
DEFAULT_TIMEOUT = DefaultSeconds(1.0)
# The timeouts where the SOURCE watcher sees every change (fanotify with a filesystem mark on a
# local filesystem, inode_mount.SourceInvalidations): changes then show within the watcher's delay, and the
# timeout only bounds what the kernel keeps (docs/design.md, "Cache lifetimes").
WATCHED_TIMEOUT = 86400.0


# -- kinds of value ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """How a value is written and read. `arg_type` reads it on the command line (argparse, which reports its
    errors); `read` reads it after -o (key, '=' or '', value), raising the one-line UsageError."""

    name: str
    metavar: str = ""
    arg_type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] = ()

    def read(self, key: str, eq: str, value: str) -> Any:
        if self.name == "switch":
            if eq:
                raise UsageError(f"mount option '{key}' takes no value", 2)
            return True
        if self.name == "seconds":
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not eq or not seconds >= 0:
                raise UsageError(f"mount option '{key}' needs a number of seconds >= 0, got '{value}'", 2)
            return seconds
        if self.name == "positive":
            if not value.isdigit() or int(value) <= 0:
                raise UsageError(f"mount option '{key}' needs a positive integer, got '{value}'", 2)
            return int(value)
        if not value:
            raise UsageError(f"mount option '{key}' needs a value ({key}=...)", 2)
        if self.choices and value not in self.choices:
            raise UsageError(f"mount option '{key}' must be {' or '.join(self.choices)}, got '{value}'", 2)
        if self.arg_type is not None:
            try:
                return self.arg_type(value)
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"mount option '{key}': {e}", 2) from None
        return value

    def shown(self) -> str:
        """How --help writes a value of this kind after -o name=."""
        return "|".join(self.choices) if self.choices else self.metavar


SWITCH = Kind("switch")                     # on when given; -o name takes no value
TEXT = Kind("text", "FILE")                 # any non-empty string
NAME = Kind("text", "NAME")
SECONDS = Kind("seconds", "S")              # a number of seconds >= 0
POSITIVE = Kind("positive", "N")            # an integer > 0
COUNT = Kind("count", "N", nonneg_int)      # an integer >= 0
SIZE = Kind("size", "N", byte_size)         # bytes, with k, M, G suffixes
FORMAT = Kind("choice", choices=("text", "jsonl"))
OPS = Kind("list", "OP,...", comma_list)
FAULT = Kind("fault", "RULE", fault_rule)
PID = Kind("count", "PID", nonneg_int)
UID = Kind("count", "UID", nonneg_int)
GLOB = Kind("text", "GLOB")
COMM = Kind("text", "COMM")
MOUNT_SPEC = Kind("text", "OPT[,OPT...]")


# -- the table -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One option. `flags`: its command-line spellings (none: -o only); `mount`: its -o name (none: a flag
    only); `goes`: who consumes the -o form (KERNEL, CONFIG, TRACE, DAEMON, IGNORED)."""

    name: str
    kind: Kind
    help: str | None  # None: not shown (internal)
    default: Any = None
    flags: tuple[str, ...] = ()
    mount: str | None = None
    goes: str = DAEMON
    commands: tuple[str, ...] = ()       # the commands whose parser takes the flag
    helper: bool = True                  # the -o form is accepted in mount(8)/fstab's helper form
    background_only: bool = False        # the -o form needs a background daemon (-b, mount(8), fstab)
    group: str | None = None
    repeat: bool = False                 # a flag that may be given again (a list)
    prefix: bool = False                 # an IGNORED -o entry that matches every option starting with `mount`
    help_by_command: dict[str, str] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name

    @property
    def flag(self) -> str:
        """The long flag, as messages name it."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0]) if self.flags else ""


_BOTH = ("mount", "trace")
_IGNORED_HELP = "accepted and ignored, for fstab, mount(8) and systemd"
_GENERIC = "generic mount flags, passed to the kernel (mount.fuse3 adds dev or nodev and suid or nosuid)"
_KERNEL_CACHE = ("the kernel's cache lifetimes one by one (negative_timeout, for names found absent, defaults to 0, "
                 "and to a day where the watcher sees every change)")


def _ignored(*names: str, prefix: bool = False) -> list[Option]:
    return [Option(n, SWITCH, _IGNORED_HELP, mount=n, goes=IGNORED, prefix=prefix) for n in names]


# Every handler runs Python: workers beyond the cores mostly wait for the interpreter lock (measured on 2 cores:
# 2 workers beat 4 and 10, docs/benchmarks.md "Worker threads"). The cores this process may run on (taskset,
# cpusets), not the machine's.
DEFAULT_MAX_THREADS = min(4, max(2, len(os.sched_getaffinity(0))))

OPTIONS: tuple[Option, ...] = (
    # -- the commands' own flags ------------------------------------------------------------------------------
    Option("source", Kind("text", "DIR"), "directory to mount (default: current)", default=".",
           flags=("--source",), commands=("trace",)),
    Option("options", MOUNT_SPEC, "mount options, see below", default=[], flags=("-o",), commands=_BOTH,
           repeat=True,
           help_by_command={"trace": "mount options, as for the mount (e.g. -o timeout=0: strict mode, every "
                                     "lookup traced)"}),
    Option("background", SWITCH, "return once the mount is usable; the filesystem keeps running in the "
           "background", default=False, flags=("-b", "--background"), commands=("mount",)),
    Option("single_threaded", SWITCH, "serve requests one at a time in one thread (on more than one CPU a "
           "single client is slower: docs/benchmarks.md)",
           default=False, flags=("-s", "--single-threaded"), commands=("mount",)),
    Option("debug", SWITCH, "also print libfuse's own request log", default=False, flags=("-d", "--debug"),
           commands=("mount",)),
    Option("passthrough", SWITCH, "kernel passthrough: reads and writes bypass the daemon (needs libfuse >= 3.17 "
           "and CONFIG_FUSE_PASSTHROUGH; data I/O is then not traced)", default=False, flags=("--passthrough",),
           mount="passthrough", commands=("mount",)),
    Option("version", SWITCH, "show program's version number and exit", flags=("-V", "--version"),
           commands=("mount",)),
    # -- tracing (also -o, for fstab and mount(8), which have no --options) -------------------------------------
    Option("format", FORMAT, "text: one readable line per operation; jsonl: one JSON object per line (see "
           "README)", default="text", flags=("--format",), mount="trace_format", goes=TRACE, commands=_BOTH,
           group="tracing"),
    Option("output", TEXT, "write events to FILE (default: stderr; with --background, a file in $TMPDIR); FILE "
           "ending in .zst or .gz is written compressed (zstd, gzip), readable while written",
           flags=("--output",), mount="trace", goes=TRACE, commands=_BOTH, group="tracing",
           help_by_command={"trace": "write events to FILE (default: stderr); FILE ending in .zst or .gz is written "
                                     "compressed (zstd, gzip)"}),
    Option("output_max_bytes", SIZE, "rotate FILE when it would exceed N bytes (suffixes k, M, G; compressed "
           "bytes for .zst/.gz: each rotated file is a complete compressed file); 0 = never", default=0,
           flags=("--output-max-bytes",), mount="trace_max_bytes", goes=TRACE, commands=_BOTH, group="tracing"),
    Option("output_backups", COUNT, "rotated files to keep: FILE.1 ... FILE.N (default 1; 0 = truncate and "
           "restart)", default=1, flags=("--output-backups",), mount="trace_backups", goes=TRACE, commands=_BOTH,
           group="tracing"),
    Option("no_trace", SWITCH, "do not record operations at all", default=False, flags=("--no-trace",),
           mount="notrace", goes=TRACE, commands=("mount",), group="tracing"),
    Option("cmdline", SWITCH, "add each caller's full command line to events (text: after the caller, as "
           "'$ CMD ARGS')", default=False,
           flags=("--cmdline",), commands=_BOTH, group="tracing"),
    Option("summary_json", TEXT, "also write the summary as JSON to FILE", flags=("--summary-json",),
           commands=_BOTH, group="tracing"),
    Option("no_summary", SWITCH, "do not print the summary table", default=False, flags=("--no-summary",),
           commands=_BOTH, group="tracing"),
    # -- filters ---------------------------------------------------------------------------------------------
    Option("ops", OPS, "only these operations", default=[], flags=("--ops",), commands=_BOTH, group="filters"),
    Option("exclude_ops", OPS, "not these operations", default=[], flags=("--exclude-ops",), commands=_BOTH,
           group="filters"),
    Option("path", GLOB, "only paths matching GLOB (fnmatch, '*' crosses '/'); repeatable", default=[],
           flags=("--path",), commands=_BOTH, group="filters", repeat=True),
    Option("pid", PID, "only this caller pid; repeatable", default=[], flags=("--pid",), commands=_BOTH,
           group="filters", repeat=True),
    Option("comm", COMM, "only this process name; repeatable", default=[], flags=("--comm",), commands=_BOTH,
           group="filters", repeat=True),
    Option("uid", UID, "only this caller uid; repeatable", default=[], flags=("--uid",), commands=_BOTH,
           group="filters", repeat=True),
    Option("errors_only", SWITCH, "only failed operations", default=False, flags=("--errors-only",),
           commands=_BOTH, group="filters"),
    # `trace` passes it to its daemon: keep only events of this process tree (and kernel-issued events on its
    # files).
    Option("descendants_of", COUNT, None, flags=("--descendants-of",), commands=_BOTH, group="filters"),
    # -- fault injection -------------------------------------------------------------------------------------
    Option("fault", FAULT, "inject a fault into matching calls, e.g. 'op=write,path=*.db,errno=ENOSPC' or "
           "'op=read,delay=50ms,probability=0.1,seed=7'; keys: " + ", ".join(FAULT_KEYS) + "; repeatable",
           default=[], flags=("--fault",), commands=_BOTH, group="faults", repeat=True),
    Option("fault_file", TEXT, "rules from FILE, one per line ('#' comments); read again whenever FILE changes, "
           "on the live mount", flags=("--fault-file",), mount="fault_file", goes=TRACE, commands=_BOTH,
           group="faults"),
    # -- -o only: for the kernel ------------------------------------------------------------------------------
    Option("allow_other", SWITCH, "let other users use the mount (root, or user_allow_other in /etc/fuse.conf)",
           mount="allow_other", goes=KERNEL),
    Option("allow_root", SWITCH, "let root use the mount too (same conditions as allow_other)",
           mount="allow_root", goes=KERNEL),
    Option("default_permissions", SWITCH, "the kernel checks SOURCE's permissions for every caller (on with "
           "allow_other or allow_root; without them only the daemon's own user can use the mount, and SOURCE checks "
           "each operation as that user)", mount="default_permissions", goes=KERNEL),
    Option("no_default_permissions", SWITCH, "turn default_permissions off", mount="no_default_permissions"),
    Option("ro", SWITCH, "read-only mount", mount="ro", goes=KERNEL),
    Option("rw", SWITCH, "read-write mount (the default)", mount="rw", goes=KERNEL),
    Option("fsname", NAME, "what mount(8) shows (default: SOURCE, type fuse.passthrough; mounted by mount(8) or "
           "fstab: fuse.fuse-passthrough)", mount="fsname", goes=KERNEL),
    Option("subtype", NAME, "what mount(8) shows (default: SOURCE, type fuse.passthrough; mounted by mount(8) "
           "or fstab: fuse.fuse-passthrough)", mount="subtype", goes=KERNEL),
    Option("auto_unmount", SWITCH, "fusermount3 unmounts when the daemon dies", mount="auto_unmount",
           goes=KERNEL),
    *(Option(n, SWITCH, _GENERIC, mount=n, goes=KERNEL)
      for n in ("dev", "nodev", "suid", "nosuid", "exec", "noexec", "sync", "async", "dirsync")),
    Option("noatime", SWITCH, "no atime updates: passed to the kernel, and SOURCE's files are opened with "
           "O_NOATIME", mount="noatime", goes=KERNEL),
    Option("nodiratime", SWITCH, "no atime updates of directories (O_NOATIME on SOURCE's directories)",
           mount="nodiratime", goes=DAEMON),
    *(Option(n, SWITCH, "atime variants: SOURCE's filesystem keeps its files' atimes as it is mounted",
             mount=n, goes=DAEMON)
      for n in ("atime", "diratime", "relatime", "norelatime", "strictatime", "nostrictatime")),
    *(Option(n, NAME, "SELinux contexts, passed to the kernel", mount=n, goes=KERNEL)
      for n in ("context", "fscontext", "defcontext", "rootcontext")),
    Option("max_read", POSITIVE, "the largest read request the kernel sends, in bytes", mount="max_read",
           goes=KERNEL),
    Option("blksize", POSITIVE, "the block size the kernel reports; it takes it for block-device (fuseblk) "
           "mounts only, so here the mount fails", mount="blksize", goes=KERNEL),
    # -- -o only: caching (struct fuse_config) ----------------------------------------------------------------
    Option("timeout", SECONDS, "how long the kernel caches attributes and names (attr_timeout and "
           "entry_timeout); default 1, and 1 day on a local SOURCE that the watcher sees whole (fanotify, as "
           "root). Changes made through the mount are invalidated at once, hard links "
           "included; changes made directly in SOURCE show within S seconds (sooner with the SOURCE watcher). "
           "Cached lookups and stats never reach the daemon, so the trace shows what the kernel asked, not every "
           "syscall. timeout=0 is strict mode: no caching; every lookup and stat reaches the daemon and the "
           "trace, and changes made directly in SOURCE are seen at once (slower: one request per path component "
           "of every syscall)", default=DEFAULT_TIMEOUT, mount="timeout"),
    Option("nowatch", SWITCH, "do not watch SOURCE (fanotify or inotify) for changes made there directly; they "
           "are then seen within the timeout (1 s) instead of ~0.1 s", mount="nowatch"),
    Option("attr_timeout", SECONDS, _KERNEL_CACHE, default=DEFAULT_TIMEOUT, mount="attr_timeout", goes=CONFIG),
    Option("entry_timeout", SECONDS, _KERNEL_CACHE, default=DEFAULT_TIMEOUT, mount="entry_timeout", goes=CONFIG),
    Option("negative_timeout", SECONDS, _KERNEL_CACHE, default=DefaultSeconds(0.0), mount="negative_timeout",
           goes=CONFIG),
    Option("kernel_cache", SWITCH, "keep file data cached in the kernel across opens", mount="kernel_cache",
           goes=CONFIG),
    Option("auto_cache", SWITCH, "keep file data cached across opens while the file's ctime, mtime and size are "
           "unchanged (the default)", mount="auto_cache", goes=CONFIG),
    Option("noauto_cache", SWITCH, "drop a file's cached data at every open, changed or not", mount="noauto_cache",
           goes=CONFIG),
    Option("dir_handles", SWITCH, "answer every open of a directory (OPENDIR and RELEASEDIR requests, in the trace "
           "too). By default a watched, cached mount where the kernel or the daemon's own ids decide who may list "
           "a directory answers the first with ENOSYS, and the kernel then opens directories itself and keeps "
           "their listings until SOURCE changes them; with this option listings are also checked at each open",
           mount="dir_handles", goes=CONFIG),
    Option("flush", SWITCH, "send a FLUSH at every close() of a descriptor that may have written (in the trace "
           "too). By default files on a filesystem whose close() has nothing to report (ext4, xfs, btrfs, tmpfs) "
           "are opened with FOPEN_NOFLUSH, and the kernel does not ask", mount="flush", goes=CONFIG),
    Option("direct_io", SWITCH, "bypass the page cache: every read and write reaches the daemon",
           mount="direct_io", goes=CONFIG),
    # -- -o only: the daemon's own ----------------------------------------------------------------------------
    Option("nonempty", SWITCH, "allow a non-empty MOUNTPOINT (its files are hidden while mounted)",
           mount="nonempty"),
    Option("remount", SWITCH, "change the options of the mount at MOUNTPOINT live (mount -o remount,... does "
           "the same): ro/rw, [no]suid, [no]dev, [no]exec, sync/async, dirsync and the atime options; the others "
           "are fixed while the daemon runs", mount="remount"),
    Option("max_threads", POSITIVE, "at most N requests served at once (worker threads; default one per CPU it "
           f"may run on, at least 2 and at most 4, here {DEFAULT_MAX_THREADS}: more workers than cores hand Python's interpreter "
           "lock around more than they overlap, see docs/benchmarks.md); -s is one. Over io_uring: threads per CPU at most, "
           "one and spares while its others are blocked",
           default=DEFAULT_MAX_THREADS, mount="max_threads"),
    Option("park_us", COUNT, "a worker that finishes a request while another worker is busy (inside a request "
           "younger than a step, and inside requests at least half of the last step) waits in steps of N "
           "microseconds before it reads the next (default 1000; 0: never): one worker running Python at a time "
           "hands its interpreter lock around less (docs/benchmarks.md, 2026-12-06 14:45)",
           default=1000, mount="park_us"),
    Option("io_uring", SWITCH, "serve requests through FUSE over io_uring, or fail if the kernel cannot (Linux >= "
           "6.14 with CONFIG_FUSE_IO_URING and /sys/module/fuse/parameters/enable_uring set to Y): each CPU's "
           "requests are served by a thread on that CPU, which saves the wake-ups of /dev/fuse; faster for a client "
           "at a time, slower for several busy ones (docs/benchmarks.md, 2026-12-07 12:00)",
           mount="io_uring"),
    Option("log", TEXT, "where a background daemon's messages go (default: with -b, a file in $TMPDIR; mounted "
           "by mount(8) or fstab, syslog)", mount="log", background_only=True),
    # -- -o only: accepted and ignored, for mount(8), fstab and systemd ---------------------------------------
    # (mount.fuse3 strips most of them, but they may also be given to us directly).
    *_ignored("defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group",
              "lazytime", "nolazytime"),
    *_ignored("x-", "X-", "comment=", prefix=True),  # userspace annotations such as x-systemd.automount
)

BY_MOUNT_NAME = {o.mount: o for o in OPTIONS if o.mount and not o.prefix}
IGNORED_PREFIXES = tuple(o.mount for o in OPTIONS if o.prefix and o.mount)
# What an unknown -o option's message lists: every option that does something.
KNOWN = sorted(o.mount for o in OPTIONS if o.mount and o.goes != IGNORED)
# The -o options that are the same as a tracing --option: -o name -> the flag's dest.
TRACE_OPTIONS = {o.mount: o.dest for o in OPTIONS if o.mount and o.goes == TRACE}
# What mount(8), fstab and systemd may pass (the helper form, mount_helper.py); prefixes: IGNORED_PREFIXES.
HELPER_OPTIONS = frozenset(o.mount for o in OPTIONS if o.mount and o.helper and not o.prefix)


def lookup(item: str) -> Option | None:
    """The option of one -o item ('key' or 'key=value'); None for one that is accepted and ignored. An unknown
    option is a one-line usage error."""
    key, eq, _ = item.partition("=")
    option = BY_MOUNT_NAME.get(key)
    if option is not None and option.goes == IGNORED:
        if not eq:
            return None
        option = None  # e.g. defaults=1: not what mount(8) passes
    if option is None and item.startswith(IGNORED_PREFIXES):
        return None
    if option is None:
        raise UsageError(f"unknown mount option '{key}' (known: {', '.join(KNOWN)})", 2)
    return option


def split_options(spec: str) -> list[str]:
    return [s for s in spec.split(",") if s]


# -- what the table generates --------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser, command: str, groups: Iterable[str | None] | None = None) -> None:
    """Add the flags of `command` to `p`: those of `groups` (None: the default group; all groups by default),
    in table order, each group as --help shows it."""
    wanted = list(groups) if groups is not None else [None, *GROUPS]
    for g in wanted:
        target: Any = p if g is None else p.add_argument_group(GROUPS[g])
        for o in OPTIONS:
            if o.flags and command in o.commands and o.group == g:
                target.add_argument(*o.flags, **_argparse_kwargs(o, command))


def _argparse_kwargs(o: Option, command: str) -> dict[str, Any]:
    help_text = o.help_by_command.get(command, o.help)
    kw: dict[str, Any] = {"help": argparse.SUPPRESS if help_text is None else help_text}
    if o.name == "version":
        return {**kw, "action": "version", "version": f"%(prog)s {__version__}"}
    kw["dest"] = o.name
    if o.kind is SWITCH:
        return {**kw, "action": "store_true"}
    if o.kind.choices:
        kw["choices"] = o.kind.choices
    elif o.kind.metavar:
        kw["metavar"] = o.kind.metavar
    if o.kind.arg_type is not None:
        kw["type"] = o.kind.arg_type
    if o.repeat:
        kw["action"] = "append"
    kw["default"] = o.default
    return kw


def mount_options_help(width: int = 110) -> str:
    """The -o list of --help: the -o-only options (those that share a help text listed together), then those
    that are the same as a flag, then those accepted and ignored."""
    own: list[tuple[list[str], str]] = []
    same: list[tuple[list[str], str]] = []
    ignored: list[str] = []
    for o in OPTIONS:
        if not o.mount or o.help is None:
            continue
        if o.goes == IGNORED:
            ignored.append(o.mount + ("*" if o.mount.endswith("-") else "...") if o.prefix else o.mount)
            continue
        value = "" if o.kind is SWITCH else o.kind.shown()
        shown = f"{o.mount}={value}" if value else o.mount
        text = f"{o.flag} {value}".rstrip() if o.flags else o.help
        if o.background_only:
            text += "; only with -b, mount(8) or fstab"
        entries = same if o.flags else own
        if entries and entries[-1][1] == text:
            entries[-1][0].append(shown)
        else:
            entries.append(([shown], text))
    out = ["mount options (-o, comma separated, repeatable):"]
    out += _entries(own, width)
    out.append("  the same as a command-line option (for fstab and mount(8), which have no --options):")
    out += _entries(same, width)
    out += _entries([(ignored, _IGNORED_HELP)], width)
    return "\n".join(out) + "\n"


def _entries(entries: list[tuple[list[str], str]], width: int) -> list[str]:
    lines: list[str] = []
    indent = " " * 25
    for names, text in entries:
        head = "  " + ", ".join(names)
        if len(head) <= 23:
            lines += textwrap.wrap(text, width, initial_indent=head.ljust(25), subsequent_indent=indent)
        else:
            lines += textwrap.wrap(", ".join(names), width, initial_indent="  ", subsequent_indent="  ")
            lines += textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    return lines
