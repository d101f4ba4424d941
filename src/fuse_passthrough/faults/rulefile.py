"""`--fault-file FILE`: rules read from a file, and read again whenever it changes, on a live mount.

The file's directory is watched with inotify (editors replace a file by renaming a new one over it, which a
watch on the file itself would miss); where inotify is unavailable the file's (mtime, size, inode) is polled
twice a second. A file that no longer parses keeps the rules in force and says why on stderr.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .rules import FaultRule, RuleError, parse_rules_file

POLL_SECONDS = 0.5


def read_rules(path: str) -> list[FaultRule]:
    """The rules in `path`; RuleError (one line, naming the file) if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RuleError(f"cannot read fault file '{path}': {e.strerror}") from None
    except UnicodeDecodeError:
        raise RuleError(f"fault file '{path}' is not UTF-8 text") from None
    return parse_rules_file(text, path)


class RuleFileWatcher:
    """Calls `on_rules(rules)` each time `path` changes and parses, `on_error(message)` when it does not."""

    def __init__(self, path: str, on_rules: Callable[[list[FaultRule]], None],
                 on_error: Callable[[str], None]) -> None:
        self.path = os.path.abspath(path)
        self._on_rules = on_rules
        self._on_error = on_error
        self._stop = threading.Event()
        self._signature = self._stat()
        self._inotify = self._open_inotify()
        self._thread = threading.Thread(target=self._run, name="fault-file", daemon=True)
        self._thread.start()

    def _open_inotify(self):  # type: ignore[no-untyped-def]
        try:
            from inotify_simple import INotify, flags
            ino = INotify()
            # Written and closed, or renamed into place: the moments the file is whole. (Not CREATE: an editor's
            # new file is still empty then. Not DELETE: a removed file keeps the rules in force.)
            mask = flags.CLOSE_WRITE | flags.MOVED_TO
            ino.add_watch(os.path.dirname(self.path), mask)
            return ino
        except (ImportError, OSError):
            return None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _run(self) -> None:
        name = os.path.basename(self.path)
        while not self._stop.is_set():
            if self._inotify is not None:
                events = self._inotify.read(timeout=int(POLL_SECONDS * 1000))
                if any(e.name == name for e in events) and not self._stop.is_set():
                    self.reload()
                continue
            self._stop.wait(POLL_SECONDS)
            signature = self._stat()
            if signature == self._signature or signature is None:
                continue  # unchanged, or removed (the rules in force stay)
            self._signature = signature
            self.reload()

    def reload(self) -> None:
        try:
            rules = read_rules(self.path)
        except RuleError as e:
            self._on_error(f"{e}; the previous rules stay in force")
            return
        self._on_rules(rules)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._inotify is not None:
            self._inotify.close()
