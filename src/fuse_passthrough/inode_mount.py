"""Serving a mount with the inode core (`--core=inode`): the low-level session, its options, the SOURCE
watcher's invalidations, the layers (tracing, fault injection), and a clean stop.

Mount options map as for the path core: the kernel's (-o allow_other, ro, fsname...) go to the session;
attr_timeout / entry_timeout / negative_timeout (and timeout=) become the timeouts of every entry and attribute
reply — when none is given, replies about what the SOURCE watcher sees whole carry options.WATCHED_TIMEOUT
instead (`SourceInvalidations`); direct_io, kernel_cache and noauto_cache set the open replies' flags (by default
a file's pages are kept while it is unchanged). The path core's libfuse options ac_attr_timeout and hard_remove
have no meaning here and are refused by `check_inode_options`. Tracing and
fault injection are layers of a `LayerChain` around the operations (chain.py): tracing outermost, so the trace
shows what the fault layer did.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from .chain import LayerChain
from .inode_ops import InodeOperations
from .inodes import Node
from .mount import UsageError

_UNSUPPORTED_CONFIG = ("ac_attr_timeout", "hard_remove")


def check_inode_options(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """What the inode core cannot do yet, refused in one line before mounting."""
    for key in _UNSUPPORTED_CONFIG:
        if config.get(key):
            raise UsageError(f"--core=inode: mount option '{key}' is for the path core's libfuse (not supported "
                             "by the inode core)", 2)
    if args.passthrough:
        from .lowlevel.binding import VERSION
        if VERSION < (3, 17):
            raise UsageError(f"--core=inode --passthrough needs libfuse >= 3.17 (this machine has libfuse "
                             f"{VERSION[0]}.{VERSION[1]}; Debian 13 ships 3.17)")


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
    """Changes made directly in SOURCE, reported by the watcher, turned into exact invalidations through the node
    table: the name (notify_inval_entry on its directory's node) and the object (notify_inval_inode: attributes
    and data). Sent from the watcher's own thread, never from a request handler, so they may wait for the
    kernel's locks.

    With fanotify (root), names are reported by their directory's (st_dev, st_ino), and a filesystem mark on
    each local filesystem reports every changed object whatever name it was changed through: there, replies
    carry `long_timeout` (ops.trusted, Node.watched). inotify sees only names in the directories it watches (not
    a change through a hard link elsewhere): its replies keep the short timeout. Lost events, a mount made inside
    SOURCE, or a watcher that stops invalidate everything the kernel holds (the last also ends the long
    timeouts)."""

    def __init__(self, session: Any, ops: InodeOperations, long_timeout: float = 0.0) -> None:
        from .watcher import FanotifyWatcher, watch_source
        self._session = session
        self._ops = ops
        self._nodes = ops.nodes
        self._said_lost = False
        self.watcher = watch_source(ops.source, self.changed, on_entry=self.entry_changed,
                                    on_object=self.object_changed, on_lost=self.lost)
        self._objects = isinstance(self.watcher, FanotifyWatcher) and long_timeout > 0
        self._devices: set[int] = set()  # st_dev whose filesystem mark was tried
        if self.watcher is None:
            return
        root = self._nodes.root
        root.watched = time.monotonic_ns()  # the watcher marked SOURCE when it started
        ops.on_directory = self.directory
        if self._objects:
            ops.long_timeout = long_timeout
            self._filesystem(root)

    def _filesystem(self, node: Node) -> None:
        """Mark the filesystem of the directory `node` (once): its objects' replies may be long from now on."""
        dev = node.key[0]
        if dev in self._devices or self.watcher is None:
            return
        self._devices.add(dev)
        if self.watcher.watch_filesystem(node.proc):  # type: ignore[union-attr]
            self._ops.trusted[dev] = time.monotonic_ns()

    def directory(self, node: Node) -> None:
        """The kernel learnt a directory: watch it (the node's own inode, and its filesystem if new)."""
        path = self._nodes.path(node.nodeid)
        if path is None or self.watcher is None:
            return
        if self.watcher.watch_dir(path, where=node.proc, key=node.key):
            if self._objects:
                self._filesystem(node)
            node.watched = time.monotonic_ns()

    def changed(self, path: str) -> None:
        """inotify: a change at the mount path `path`."""
        parent, node, name = self._nodes.resolve(path)
        self._invalidate(parent, node, name)

    def entry_changed(self, directory: tuple[int, int], name: str) -> None:
        """fanotify: `name` changed in the directory with this (st_dev, st_ino) ("": the directory itself)."""
        parent = self._nodes.by_key(directory)
        if parent is None:
            return
        if not name:
            self._invalidate(None, parent, b"")
            return
        raw = os.fsencode(name)
        self._invalidate(parent, self._nodes.child(parent.nodeid, raw), raw)
        self._invalidate(None, parent, b"")  # its mtime and link count

    def object_changed(self, key: tuple[int, int]) -> None:
        """fanotify's filesystem mark: the object (st_dev, st_ino) changed, through whatever name."""
        node = self._nodes.by_key(key)
        if node is not None:
            self._invalidate(None, node, b"")

    def _invalidate(self, parent: Node | None, node: Node | None, name: bytes) -> None:
        nodes = [node] if node is not None else []
        if parent is not None and name:
            try:
                self._session.notify_inval_entry(parent.nodeid, name)
            except OSError:  # ENOENT: the kernel has no such entry cached
                pass
            # The object now at that name, which may be known by another (a new hard link changes the link
            # count of the file's other names, and no event names them).
            try:
                now = self._nodes.find(os.stat(name, dir_fd=parent.fd, follow_symlinks=False))
            except OSError:
                now = None
            if now is not None and now is not node:
                nodes.append(now)
        for n in nodes:
            n.pages = None
            try:
                self._session.notify_inval_inode(n.nodeid, 0, 0)
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
                self._invalidate(None, n, b"")

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None


def serve_inode(args: argparse.Namespace, src: str, mnt: str, opts: Any, filt: Any, output: Any,
                on_ready: Any = None) -> int:
    """Mount `src` at `mnt` with the inode core and serve until unmounted or stopped (SIGINT, SIGTERM, SIGHUP:
    libfuse's handlers end the loop, and the mount is removed); the exit status."""
    from .arguments import PROG, note
    from .lowlevel import binding as ll
    from .mount import SignalRelay
    from .options import WATCHED_TIMEOUT, DefaultSeconds

    config = opts.config
    # No timeout given: replies about what the watcher sees whole may carry the long one (SourceInvalidations).
    defaults = all(isinstance(config.get(k), DefaultSeconds) for k in ("attr_timeout", "entry_timeout"))
    ops = InodeOperations(src, attr_timeout=float(config.get("attr_timeout", 1.0)),
                          entry_timeout=float(config.get("entry_timeout", 1.0)),
                          negative_timeout=float(config.get("negative_timeout", 0.0)),
                          kernel_passthrough=args.passthrough, direct_io=bool(config.get("direct_io")),
                          keep_cache=bool(config.get("kernel_cache")), auto_cache=not config.get("noauto_cache"),
                          # FUSE_CAP_POSIX_ACL turns default_permissions on: not under no_default_permissions
                          posix_acl="default_permissions" in opts.kernel, **atime_options(opts.atime))
    layers: list[Any] = []
    sink = None
    if output is not None:
        from .tracing.chain_layer import TracingLayer
        from .tracing.sinks import ProcessSink
        output.close()  # it was opened to fail early; the writer process (re)opens it
        sink = ProcessSink(args.format, args.output, max_bytes=args.output_max_bytes,
                           backups=args.output_backups, summary=not args.no_summary,
                           summary_json=args.summary_json)
        layers.append(TracingLayer(sink, filt, with_cmdline=args.cmdline))
    from .faults.chain_layer import FaultLayer
    from .mount_command import fault_layer
    faults, rules_watcher = fault_layer(args, None, lambda inner, rules, reloadable: FaultLayer(
        rules, reloadable=reloadable))
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
    cached = ops.attr_timeout > 0 or ops.entry_timeout > 0
    invalidations: list[SourceInvalidations] = []
    refused: list[str] = []

    def on_init() -> None:
        if ops.passthrough_refused:
            refused.append(ops.passthrough_refused)
            session.exit()  # the mount is up; stop it at once rather than serve without what was asked for
            return
        if ops.passthrough:
            note("kernel passthrough: reads and writes of files go from the kernel straight to SOURCE; they "
                 "are not traced (open/create events say which files)")
        if opts.watch and cached:
            invalidations.append(SourceInvalidations(session, ops, WATCHED_TIMEOUT if defaults else 0.0))
        if on_ready is not None:
            on_ready()

    def on_destroy() -> None:
        for inv in invalidations:
            inv.close()

    ops.on_init = on_init
    ops.on_destroy = on_destroy

    def on_signal(signum: int) -> None:
        if sink is not None:
            sink.request_summary()

    relay = SignalRelay([signal.SIGUSR1], on_signal)
    status = 0
    try:
        try:
            result = session.run(single_threaded=args.single_threaded)
        except OSError as e:
            print(f"{PROG}: mounting '{mnt}' failed: {e.strerror}", file=sys.stderr)
            result = -1
        if refused:
            print(f"{PROG}: {refused[0]}", file=sys.stderr)
            status = 1
        elif result < 0:
            status = 1
    finally:
        relay.close()
        if rules_watcher is not None:
            rules_watcher.close()
        for inv in invalidations:
            inv.close()
        if sink is not None and sink.close() != 0:
            status = 1
        if handlers is not ops:
            handlers.close()
        ops.close()
    return status
