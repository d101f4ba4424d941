"""Serving a mount: the low-level session, its options, the SOURCE watcher's invalidations, the layers
(tracing, fault injection), and a clean stop.

The kernel's mount options (-o allow_other, ro, fsname...) go to the session; attr_timeout / entry_timeout /
negative_timeout (and timeout=) become the timeouts of every entry and attribute reply — when none is given,
replies about what the SOURCE watcher sees whole carry options.WATCHED_TIMEOUT instead (`SourceInvalidations`);
direct_io, kernel_cache and noauto_cache set the open replies' flags (by default a file's pages are kept while it
is unchanged). Tracing and fault injection are layers of a `LayerChain` around the operations (chain.py):
tracing outermost, so the trace shows what the fault layer did.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import signal
import stat
import sys
import threading
import time
from typing import Any

from .chain import LayerChain
from .inode_ops import InodeOperations
from .inodes import Node


def kernel_options(kernel: dict[str, Any]) -> list[str]:
    """-o items for the session from MountOptions.kernel (flags as their name, the rest as key=value)."""
    return [key if value is True else f"{key}={value}" for key, value in kernel.items()]


def atime_options(given: list[str]) -> dict[str, bool]:
    """noatime / nodiratime for InodeOperations from the atime options in the order given (the last of
    atime/noatime/relatime/strictatime wins, as for mount(8)). relatime and strictatime are SOURCE's own: the
    daemon's reads update atimes as SOURCE's mount says (docs/posix.md)."""
    noatime = nodiratime = False
    for o in given:
        if o == "noatime":
            noatime = True
        elif o in ("atime", "relatime", "norelatime", "strictatime", "nostrictatime"):
            noatime = False
        elif o in ("nodiratime", "diratime"):
            nodiratime = o == "nodiratime"
    return {"noatime": noatime, "nodiratime": nodiratime}


class SourceInvalidations:
    """Changes made directly in SOURCE, reported by the watcher as (directory key, name), turned into exact
    invalidations through the node table: the name (notify_inval_entry on its directory's node) and the objects
    (notify_inval_inode: attributes and data). Directories are watched by inode (their node's fd), so a directory
    renamed in SOURCE or through the mount keeps reporting. Sent from the watcher's own thread, never from a
    request handler, so they may wait for the kernel's locks.

    With fanotify (root) and `long_timeout` (no timeout given), a filesystem mark on each local filesystem also
    reports every changed object whatever name it was changed through: there, replies carry `long_timeout`
    (ops.trusted, Node.watched). inotify sees only names in the directories it watches (not a change through a
    hard link elsewhere): its replies keep the short timeout. Lost events, a mount made inside SOURCE, or a
    watcher that stops invalidate everything the kernel holds (the last also ends the long timeouts)."""

    def __init__(self, session: Any, ops: InodeOperations, long_timeout: float = 0.0) -> None:
        from .watcher import FanotifyWatcher, watch_source
        self._session = session
        self._ops = ops
        self._nodes = ops.nodes
        self._said_lost = False
        root = ops.nodes.root
        self.watcher = watch_source(self.changed, root.fd,
                                    on_object=self.object_changed if long_timeout > 0 else None, on_lost=self.lost,
                                    opening=ops.nodes.outside_requests)
        self._objects = isinstance(self.watcher, FanotifyWatcher) and long_timeout > 0
        self._devices: set[int] = set()  # st_dev whose filesystem mark was tried
        if self.watcher is None:
            return
        if self._objects:  # first: the directories on a marked filesystem are watched for their names only
            ops.long_timeout = long_timeout
            self._filesystem(root)
        if self.watcher.watch_key(root.fd, root.key):
            root.watched = time.monotonic_ns()
        ops.on_directory = self.directory

    def _filesystem(self, node: Node) -> None:
        """Mark the filesystem of the directory `node` (once): its objects' replies may be long from now on."""
        dev = node.key[0]
        if dev in self._devices or self.watcher is None:
            return
        self._devices.add(dev)
        if self.watcher.watch_filesystem(node.fd):  # type: ignore[union-attr]
            self._ops.trusted[dev] = time.monotonic_ns()

    def directory(self, node: Node) -> None:
        """The kernel learnt a directory: watch it (its filesystem if new, then its inode)."""
        if self.watcher is None:
            return
        if self._objects:
            self._filesystem(node)
        if self.watcher.watch_key(node.fd, node.key):
            node.watched = time.monotonic_ns()

    def changed(self, key: tuple[int, int], name: bytes | None, entry: bool) -> None:
        """`name` in the directory `key` (None: the directory itself) changed; `entry`: a name was added or
        removed there (the directory's own attributes changed too)."""
        parent = self._nodes.find_key(key)
        if parent is None:
            return
        if name is None:
            self._object(parent, None)
            return
        known = self._nodes.child(parent.nodeid, name)
        if entry:
            try:
                self._session.notify_inval_entry(parent.nodeid, name)
            except OSError:  # ENOENT: the kernel has no such entry cached
                pass
            self._object(parent, None)
        # The object now at that name, which may be known by another (a new hard link changes the link count of
        # the file's other names, and no event names them).
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
        except OSError:
            st = None
        now = self._nodes.find(st) if st is not None else None
        if known is not None and known is not now:
            self._object(known, None)
        if now is not None:
            self._object(now, st)

    def object_changed(self, key: tuple[int, int]) -> None:
        """The filesystem mark: the object (st_dev, st_ino) changed, through whatever name."""
        node = self._nodes.find_key(key)
        if node is None:
            return
        st = None
        if node.kind == stat.S_IFREG:  # its size for O_APPEND (_object)
            try:
                st = os.fstat(node.fd)
            except OSError:
                pass
        self._object(node, st)

    def _object(self, node: Node, st: os.stat_result | None) -> None:
        node.pages = None  # its next open drops the kernel's pages, whatever its ctime says
        node.xattrs_changed = time.monotonic_ns()  # what was known of its capabilities may be out of date
        try:
            self._session.notify_inval_inode(node.nodeid, 0, 0)
        except OSError:
            return
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0 and not node.backing_id:
            # The kernel places an O_APPEND write at its own idea of the size, which an invalidation does not
            # refresh (only a GETATTR does): give it the size that SOURCE's growth made, by storing the file's
            # last byte (read from SOURCE now) into its page cache.
            last = self._nodes.read_byte(node, st.st_size - 1)
            if last:
                try:
                    self._session.notify_store(node.nodeid, st.st_size - 1, last)
                except OSError:
                    pass

    def lost(self, failed: bool) -> None:
        """Events were lost, or (failed) the watcher stopped: the short timeouts from now on, and nothing the
        kernel holds is kept. Twice, the second time after replies already on their way are in."""
        if failed:
            self._ops.long_timeout = 0.0
            self._ops.trusted.clear()
            self._ops.on_directory = None
        elif not self._said_lost:  # once: a busy filesystem can fill the queue again and again
            self._said_lost = True
            print("fuse-passthrough: the SOURCE watcher lost events or a mount changed inside SOURCE; everything "
                  "the kernel cached is invalidated (and again whenever it happens)", file=sys.stderr)
        threading.Thread(target=self._invalidate_all, name="source-lost", daemon=True).start()

    def _invalidate_all(self) -> None:
        for attempt in range(2):
            if attempt:
                time.sleep(1.0)
            nodes, entries = self._nodes.snapshot()
            for parent, name in entries:
                try:
                    self._session.notify_inval_entry(parent, name)
                except OSError:
                    pass
            for n in nodes:
                self._object(n, None)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None


def fault_layer(args: argparse.Namespace) -> tuple[Any, Any]:
    """The fault-injection layer when rules are given (else None), and the rules file's watcher (else None)."""
    if not args.fault and not args.fault_file:
        return None, None
    from .arguments import fault_file_rules, note
    from .faults import FaultLayer, RuleFileWatcher
    cli_rules = list(args.fault)
    layer = FaultLayer(cli_rules + fault_file_rules(args), reloadable=bool(args.fault_file))
    for rule in layer.rules:
        note(f"fault rule: {rule.text}")
    if not args.fault_file:
        return layer, None

    def reloaded(rules: list[Any]) -> None:
        if args.passthrough and any(rule.ops & {"read", "write"} for rule in rules):
            note(f"{args.fault_file}: read/write rules do not apply to files opened in kernel passthrough")
        layer.set_rules(cli_rules + rules)
        note(f"fault rules reloaded from {args.fault_file}: {len(rules)} rule(s)"
             + "".join(f"\n  {rule.text}" for rule in rules))

    watcher = RuleFileWatcher(args.fault_file, reloaded,
                              lambda message: note(f"fault rules not reloaded: {message}"))
    return layer, watcher


class _FlagFollower:
    """Remount (remount.py): the daemon follows its mount's noatime/nodiratime flags as they change, and keeps
    the record remount compares unchanged options with."""

    def __init__(self, ops: InodeOperations, entry: Any, record: Any) -> None:
        from .remount import MountFlagsWatcher, atime_state
        self._ops, self._record = ops, record
        self._last = atime_state(entry.options)
        self._watcher = MountFlagsWatcher(entry.mount_id, self.changed)

    def changed(self, options: list[str]) -> None:
        from .remount import atime_state
        state = atime_state(options)
        if state != self._last:  # only a change: a daemon's -o nodiratime may not be in the flags (not root)
            self._last = state
            self._ops.noatime = state["noatime"]
            self._ops.nodiratime = state["noatime"] or state["nodiratime"]
        self._record.write(options)

    def close(self) -> None:
        self._watcher.close()
        self._record.remove()


def follow_mount_flags(ops: InodeOperations, mnt: str, src: str, opts: Any, specs: list[str],
                       out: list[Any]) -> None:
    """From init: put -o nodiratime on the mount itself (root), record the daemon's options and follow the mount's
    atime flags (remount.py)."""
    from .remount import record_daemon, set_nodiratime
    if ops.nodiratime and not ops.noatime:
        set_nodiratime(mnt)
    recorded = record_daemon(mnt, src, str(opts.kernel.get("subtype", "passthrough")), specs)
    if recorded is not None:
        out.append(_FlagFollower(ops, recorded[1], recorded[0]))


class NodeBudget:
    """Keeps the node table (an O_PATH fd per node the kernel holds) within the daemon's fd limit: past 80 % of
    it, the oldest entries without an open handle are invalidated (notify_inval_entry) until the table is back at
    60 %, and the kernel, which then drops those dentries and their unused inodes, sends FORGET for them. Only a
    cache is shrunk: an invalidated name is looked up again when used. Without it, a walk of more files than the
    limit while the kernel has memory to cache them all fails with EMFILE. Notifications from its own thread,
    never from a request handler."""

    HIGH, LOW = 0.8, 0.6

    def __init__(self, session: Any, nodes: Any, limit: int) -> None:
        self._session, self._nodes = session, nodes
        self.high, self.low = int(limit * self.HIGH), int(limit * self.LOW)
        self._wake = threading.Event()
        self._stop = False
        nodes.on_crowded = self._wake
        nodes.crowded = self.high
        self._thread = threading.Thread(target=self._run, name="node-budget", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            excess = len(self._nodes) - self.low
            for parent, name in self._nodes.idle_entries(excess) if excess > 0 else ():
                if self._stop:
                    return
                try:
                    self._session.notify_inval_entry(parent, name)
                except OSError:  # the kernel no longer has it
                    pass
            time.sleep(0.05)  # for the FORGETs to come before measuring again
            if len(self._nodes) > self.high:
                self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._nodes.on_crowded = None
        self._wake.set()
        self._thread.join(timeout=5)


def fd_limit() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> None:
    """Each node the kernel holds is an open O_PATH fd: allow as many as the system does (as root up to
    fs.nr_open, as passthrough_hp does), not the login's soft limit (often 1024), or lookups fail with EMFILE
    once the kernel caches that many inodes."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = max(hard, int(f.read()))
        except (OSError, ValueError):
            pass
    for limit in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return
        except (OSError, ValueError):
            continue


# How many fds the daemon's fd table is given at start (at most; never beyond the fd limit). The kernel grows the
# table by doubling (128, 256, 512...), and while threads share it each growth waits for an RCU grace period
# (expand_fdtable's synchronize_rcu) with every thread that opens an fd meanwhile: a request stalled ~12 ms each
# time the nodes, each an open fd, crossed a power of two (docs/benchmarks.md, 2026-12-06 10:00). 65,536 slots
# are 512 KiB of kernel memory.
FD_TABLE_RESERVE = 65536


def reserve_fd_table(limit: int) -> None:
    """Grow this process's fd table to min(`limit`, FD_TABLE_RESERVE) slots now, in one step, before the
    workers start: an fd duplicated at the top slot and closed again (F_DUPFD never replaces an open fd)."""
    top = min(limit, FD_TABLE_RESERVE) - 1
    try:
        probe = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top))
    except OSError:  # every slot from `top` up is taken, or the limit moved: the kernel grows it as it goes
        pass
    finally:
        os.close(probe)


def freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """A `gc.callbacks` entry: what survives a full collection is frozen, so the next full pass walks only what
    came since instead of every node again (a million nodes: 400 ms per pass; docs/benchmarks.md, 2026-12-06
    18:10). Nodes refer to each other by node id and hold no reference cycles: frozen, they are still freed when
    the last reference goes. A cycle that was alive at a full pass and dies later is not collected."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def needs_dir_handles(args: argparse.Namespace, opts: Any) -> bool:
    """Whether directory opens must reach the daemon (else InodeOperations asks the kernel not to send them).
    They must where the daemon checks who may list a directory (other users come in and the kernel does not
    check: allow_other without default_permissions, or a daemon that is not root), where a listing must be
    checked against SOURCE at each open (no watcher to drop the kernel's kept listings, strict mode,
    noauto_cache), where a fault rule may name opendir or releasedir, and with -o dir_handles."""
    config = opts.config
    kernel = opts.kernel
    cached = (bool(config.get("auto_cache", True)) and not config.get("noauto_cache")
              and float(config.get("entry_timeout", 1.0)) > 0 and float(config.get("attr_timeout", 1.0)) > 0)
    checked = "default_permissions" in kernel or (
        os.geteuid() == 0 and not kernel.get("allow_other") and not kernel.get("allow_root"))
    faults = bool(args.fault_file) or any({"opendir", "releasedir"} & rule.ops for rule in args.fault)
    return bool(config.get("dir_handles")) or not (cached and opts.watch and checked) or faults


def needs_flush(args: argparse.Namespace, opts: Any) -> bool:
    """Whether every close() of a descriptor that may have written must reach the daemon (FLUSH), also where
    SOURCE's close() has nothing to report: with -o flush, and where a fault rule may name flush."""
    faults = bool(args.fault_file) or any("flush" in rule.ops for rule in args.fault)
    return bool(opts.config.get("flush")) or faults


def serve(args: argparse.Namespace, src: str, mnt: str, opts: Any, filt: Any, output: Any,
          on_ready: Any = None) -> int:
    """Mount `src` at `mnt` and serve until unmounted or stopped (SIGINT, SIGTERM, SIGHUP:
    libfuse's handlers end the loop, and the mount is removed); the exit status."""
    from .arguments import PROG, note
    from .lowlevel import binding as ll
    from .mount import SignalRelay
    from .options import WATCHED_TIMEOUT, DefaultSeconds

    config = opts.config
    if opts.io_uring and (why := "not with -s (one thread serves every request there)" if args.single_threaded
                          else ll.io_uring_unavailable()):
        print(f"{PROG}: -o io_uring: {why}", file=sys.stderr)
        return 1
    raise_fd_limit()
    reserve_fd_table(fd_limit())
    # No timeout given: replies about what the watcher sees whole may carry the long one (SourceInvalidations).
    defaults = all(isinstance(config.get(k), DefaultSeconds) for k in ("attr_timeout", "entry_timeout"))
    ops = InodeOperations(src, attr_timeout=float(config.get("attr_timeout", 1.0)),
                          entry_timeout=float(config.get("entry_timeout", 1.0)),
                          negative_timeout=float(config.get("negative_timeout", 0.0)),
                          kernel_passthrough=args.passthrough, direct_io=bool(config.get("direct_io")),
                          keep_cache=bool(config.get("kernel_cache")),
                          auto_cache=bool(config.get("auto_cache", True)) and not config.get("noauto_cache"),
                          # FUSE_CAP_POSIX_ACL turns default_permissions on: not under no_default_permissions
                          posix_acl="default_permissions" in opts.kernel, **atime_options(opts.atime),
                          dir_handles=needs_dir_handles(args, opts), flushes=needs_flush(args, opts))
    ops.long_negative = defaults and isinstance(config.get("negative_timeout"), DefaultSeconds)
    layers: list[Any] = []
    sink = None
    if output is not None:
        from .tracing.layer import TracingLayer
        from .tracing.sinks import ProcessSink
        output.close()  # it was opened to fail early; the writer process (re)opens it
        sink = ProcessSink(args.format, args.output, max_bytes=args.output_max_bytes,
                           backups=args.output_backups, summary=not args.no_summary,
                           summary_json=args.summary_json)
        layers.append(TracingLayer(sink, filt, with_cmdline=args.cmdline))
    faults, rules_watcher = fault_layer(args)
    if faults is not None:
        layers.append(faults)  # inside the tracing layer: the trace shows what it injected
    handlers: Any = LayerChain(ops, layers) if layers else ops
    try:
        session = ll.LowLevelSession(handlers, mnt, kernel_options(opts.kernel), debug=args.debug)
    except ValueError as e:
        print(f"{PROG}: mounting '{mnt}' failed: {e}", file=sys.stderr)
        ops.close()
        if rules_watcher is not None:
            rules_watcher.close()
        if sink is not None:
            sink.close()
        return 1
    invalidations: list[SourceInvalidations] = []
    budgets: list[NodeBudget] = []
    flag_watchers: list[Any] = []
    refused: list[str] = []

    def on_init() -> None:
        if ops.passthrough_refused:
            refused.append(ops.passthrough_refused)
            session.exit()  # the mount is up; stop it at once rather than serve without what was asked for
            return
        if ops.passthrough:
            note("kernel passthrough: reads and writes of files go from the kernel straight to SOURCE; they "
                 "are not traced (open/create events say which files)")
        # Strict mode too: nothing is cached there but the data of open files, which a rewrite in SOURCE keeping
        # size and mtime (cp -p) would otherwise leave stale for as long as the file stays open.
        if opts.watch:
            invalidations.append(SourceInvalidations(session, ops, WATCHED_TIMEOUT if defaults else 0.0))
        budgets.append(NodeBudget(session, ops.nodes, fd_limit()))
        follow_mount_flags(ops, mnt, src, opts, list(args.options), flag_watchers)
        if on_ready is not None:
            on_ready()

    def on_destroy() -> None:
        for budget in budgets:
            budget.close()
        for inv in invalidations:
            inv.close()
        for w in flag_watchers:
            w.close()

    ops.on_init = on_init
    ops.on_destroy = on_destroy

    def on_signal(signum: int) -> None:
        if sink is not None:
            sink.request_summary()

    relay = SignalRelay([signal.SIGUSR1], on_signal)
    status = 0
    # What exists now (modules, tables, the session) lives as long as the daemon: kept out of the collector's full
    # passes, the first of which otherwise walked it all inside one request, ~4 ms in (docs/benchmarks.md,
    # 2026-12-06 13:00). What survives each later full pass is frozen too (freeze_survivors).
    gc.collect()
    gc.freeze()
    gc.callbacks.append(freeze_survivors)
    try:
        try:
            result = session.run(single_threaded=args.single_threaded, max_threads=opts.max_threads,
                                 park_us=opts.park_us, io_uring=opts.io_uring)
        except OSError as e:
            print(f"{PROG}: mounting '{mnt}' failed: {e.strerror}", file=sys.stderr)
            result = -1
        if refused:
            print(f"{PROG}: {refused[0]}", file=sys.stderr)
            status = 1
        elif result < 0:
            status = 1
    finally:
        gc.callbacks.remove(freeze_survivors)
        relay.close()
        if rules_watcher is not None:
            rules_watcher.close()
        for budget in budgets:
            budget.close()
        for inv in invalidations:
            inv.close()
        for w in flag_watchers:
            w.close()
        if handlers is not ops:
            handlers.close()  # the layers first: the tracing layer hands the sink any event it still holds
        if sink is not None and sink.close() != 0:
            status = 1
        ops.close()
    return status
