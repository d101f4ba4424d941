"""The option table (options.py): it generates the parsers, --help and the -o parsing; every -o option is
accepted or refused as the table says, in both forms (command line, mount(8)/fstab helper form)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fuse_passthrough import options as table
from fuse_passthrough.errors import UsageError
from fuse_passthrough.mount import MountOptions
from fuse_passthrough.mount_command import mount_parser
from fuse_passthrough.trace_command import trace_parser
from helpers import Mount, is_mounted

PROG = [sys.executable, "-m", "fuse_passthrough"]
PARSERS = {"mount": mount_parser, "trace": trace_parser}
# A valid value for each kind of -o value.
GOOD = {"seconds": "2.5", "positive": "4096", "count": "3", "size": "64M", "text": "x", "choice": "jsonl"}
BAD = {"seconds": "soon", "positive": "0", "count": "-1", "size": "lots", "choice": "xml"}


def mount_options() -> list[table.Option]:
    return [o for o in table.OPTIONS if o.mount and o.goes != table.IGNORED]


def help_text(command: str) -> str:
    return PARSERS[command]().format_help()


@pytest.mark.parametrize("command", table.COMMANDS)
def test_the_table_generates_the_parser(command: str) -> None:
    parser = PARSERS[command]()
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    expected = {o.name: o for o in table.OPTIONS if o.flags and command in o.commands}
    assert set(actions) == set(expected)
    for name, o in expected.items():
        a = actions[name]
        assert tuple(a.option_strings) == o.flags
        if o.name != "version":
            assert a.default == o.default, name
        if o.help is None:
            assert a.help == argparse.SUPPRESS
        assert (a.choices or None) == (o.kind.choices or None), name


@pytest.mark.parametrize("command", table.COMMANDS)
def test_every_flag_of_the_table_is_in_help(command: str) -> None:
    text = help_text(command)
    for o in table.OPTIONS:
        if o.flags and command in o.commands and o.help is not None:
            for flag in o.flags:
                assert flag in text, flag
        elif o.flags and command == "trace":  # the mount's own flags (the mount's help names trace's)
            assert f"\n  {o.flags[0]}" not in text, o.flags


def test_every_mount_option_of_the_table_is_in_help() -> None:
    text = help_text("mount")
    listing = text[text.index("mount options (-o"):text.index("mount(8) and fstab")]
    for o in table.OPTIONS:
        if o.mount and o.help is not None:
            assert o.mount.rstrip("=") in listing, o.mount
    assert "x-*" in listing and "comment=..." in listing


def test_trace_help_names_trace_only_options() -> None:
    text = help_text("trace")
    assert "--source" in text and "-o OPT[,OPT...]" in text and "\n  -b, --background" not in text


@pytest.mark.parametrize("option", mount_options(), ids=lambda o: o.mount)
def test_each_mount_option_is_accepted_or_refused_as_documented(option: table.Option) -> None:
    name = option.mount
    assert name is not None
    kind = option.kind.name
    if option.kind is table.SWITCH:
        MountOptions.parse([name], "/src")
        with pytest.raises(UsageError, match=f"'{name}' takes no value") as e:
            MountOptions.parse([f"{name}=1"], "/src")
        assert e.value.status == 2
        return
    MountOptions.parse([f"{name}={GOOD[kind]}"], "/src")
    with pytest.raises(UsageError) as e:
        MountOptions.parse([f"{name}="], "/src")
    assert e.value.status == 2 and f"'{name}'" in str(e.value)
    if kind in BAD:
        with pytest.raises(UsageError) as e:
            MountOptions.parse([f"{name}={BAD[kind]}"], "/src")
        assert e.value.status == 2 and f"'{name}'" in str(e.value) and "\n" not in str(e.value)


def test_mount_options_go_where_the_table_says() -> None:
    m = MountOptions.parse(["allow_other,max_read=4096,kernel_cache,attr_timeout=3,trace=t.jsonl,"
                            "trace_format=jsonl,trace_max_bytes=1k,notrace,nonempty,nowatch"], "/src")
    assert m.kernel["allow_other"] is True and m.kernel["max_read"] == 4096
    assert m.config["kernel_cache"] == 1 and m.config["attr_timeout"] == 3.0
    assert m.trace == {"output": "t.jsonl", "format": "jsonl", "output_max_bytes": 1024, "no_trace": True}
    assert m.nonempty and not m.watch
    assert table.TRACE_OPTIONS == {"trace_format": "format", "trace": "output", "trace_max_bytes": "output_max_bytes",
                                   "trace_backups": "output_backups", "notrace": "no_trace",
                                   "fault_file": "fault_file"}


def test_defaults_come_from_the_table() -> None:
    m = MountOptions.parse([], "/src")
    for o in table.OPTIONS:
        if o.goes == table.CONFIG and o.default is not None:
            assert m.config[o.name] == o.default
    assert "default_permissions" not in m.kernel and not m.strict


@pytest.mark.parametrize("given,expected", [
    ([], False), (["allow_other"], True), (["allow_root"], True), (["default_permissions"], True),
    (["allow_other,no_default_permissions"], False), (["no_default_permissions,default_permissions"], False),
])
def test_default_permissions_where_more_than_one_user_can_reach_the_mount(given: list[str], expected: bool) -> None:
    assert ("default_permissions" in MountOptions.parse(given, "/src").kernel) is expected


def test_ignored_options_change_nothing() -> None:
    ignored = [o.mount for o in table.OPTIONS if o.goes == table.IGNORED and not o.prefix]
    items = [*ignored, "x-systemd.automount", "X-mount.mkdir", "comment=systemd.automount"]
    assert MountOptions.parse([",".join(items)], "/src") == MountOptions.parse([], "/src")
    for name in ignored:  # mount(8) passes them bare: with a value they are unknown
        with pytest.raises(UsageError, match=f"unknown mount option '{name}'"):
            MountOptions.parse([f"{name}=1"], "/src")


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as e:
        MountOptions.parse(["ro,bogus"], "/src")
    assert e.value.status == 2
    assert str(e.value) == f"unknown mount option 'bogus' (known: {', '.join(table.KNOWN)})"
    assert "nofail" not in table.KNOWN and "trace" in table.KNOWN


def test_helper_form_accepts_what_mount_and_fstab_pass() -> None:
    assert {"dev", "nodev", "suid", "nosuid", "rw", "nofail", "_netdev", "noauto", "user", "defaults",
            "trace", "log", "allow_other"} <= table.HELPER_OPTIONS
    assert table.IGNORED_PREFIXES == ("x-", "X-", "comment=")


def test_every_cache_option_is_read_by_the_daemon() -> None:
    """The cache rows are the keys inode_mount.serve reads from MountOptions.config (no row is dropped unread)."""
    import inspect

    from fuse_passthrough import inode_mount
    served = (inspect.getsource(inode_mount.serve) + inspect.getsource(inode_mount.needs_dir_handles)
              + inspect.getsource(inode_mount.needs_flush))
    cache = {o.mount for o in table.OPTIONS if o.mount and o.goes == table.CONFIG}
    assert cache == {"attr_timeout", "entry_timeout", "negative_timeout", "kernel_cache", "auto_cache",
                     "noauto_cache", "direct_io", "dir_handles", "flush"}
    assert all(f'"{key}"' in served for key in cache)


@pytest.mark.parametrize("argv", [["-o", "ro,bogus", "src", "mnt"], ["src", "mnt", "-o", "rw,nodev,nosuid,bogus"]],
                         ids=["command-line", "helper-form"])
def test_unknown_option_is_one_line_exit_2_nothing_mounted(workdir: Path, argv: list[str]) -> None:
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    r = subprocess.run(PROG + argv, cwd=workdir, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"fuse-passthrough: unknown mount option 'bogus' (known: "
                                     f"{', '.join(table.KNOWN)})"]
    assert not is_mounted(workdir / "mnt")


def test_helper_form_mounts_with_fstab_only_options(workdir: Path) -> None:
    """What mount.fuse3 runs for an fstab line with mount(8)'s options: mounted, then unmounted cleanly."""
    src, mnt, log = workdir / "src", workdir / "mnt", workdir / "daemon.log"
    src.mkdir()
    mnt.mkdir()
    (src / "f").write_text("hello")
    opts = f"rw,nodev,nosuid,nofail,_netdev,noauto,defaults,x-systemd.automount,comment=x,relatime,log={log}"
    r = subprocess.run(PROG + [str(src), str(mnt), "-o", opts], capture_output=True, text=True, timeout=30)
    pid = None
    try:
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert (mnt / "f").read_text() == "hello"
        words = log.read_text().split("(pid ")
        pid = int(words[1].split(")")[0])
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
        if pid is not None:
            deadline = time.monotonic() + 20
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, 9)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], timeout=30)
    assert not is_mounted(mnt)


def test_atime_options_are_kept_in_order_for_the_daemon() -> None:
    """The atime variants are rows of the table the daemon reads (it applies them to its opens of SOURCE);
    noatime also goes to the kernel."""
    m = MountOptions.parse(["relatime,nodiratime", "noatime"], "/src")
    assert m.atime == ["relatime", "nodiratime", "noatime"]
    assert m.kernel.get("noatime") is True and "relatime" not in m.kernel
    assert {"relatime", "nodiratime", "strictatime"} <= table.HELPER_OPTIONS


_OPENS = ("import os, sys\n"
          "for _ in range(int(sys.argv[2])):\n"
          "    os.close(os.open(sys.argv[1], os.O_RDONLY))\n")


@pytest.mark.parametrize("park_us", [None, "0", "50000"])
def test_parked_workers_serve_around_a_blocked_request(workdir: Path, park_us: str | None) -> None:
    """-o park_us (default 1000): a worker that finishes while another runs a request waits before reading the
    next, but not while the other is blocked (here a mkdir delayed 3 s): four clients' 800 opens (an OPEN and a
    RELEASE each) are all served before that mkdir ends. With a 50 ms step, waiting a step per request would take
    40 s at least."""
    src = workdir / "src"
    (src / "d").mkdir(parents=True)  # the mkdir holds its directory's lock: the opens are elsewhere
    for i in range(4):
        (src / f"f{i}").write_bytes(b"x")
    args = ["--fault", "op=mkdir,delay=3s", "-o", "max_threads=2", *(["-o", f"park_us={park_us}"] if park_us else [])]
    with Mount(src, workdir / "mnt", *args) as m, ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(os.mkdir, m.mnt / "d" / "slow")
        time.sleep(0.5)
        clients = [subprocess.Popen([sys.executable, "-c", _OPENS, str(m.mnt / f"f{i}"), "200"]) for i in range(4)]
        assert [c.wait(timeout=120) for c in clients] == [0, 0, 0, 0]
        assert not blocked.done(), "the opens were not served while the mkdir was blocked"
        blocked.result(timeout=30)
    assert sum(1 for e in m.events() if e["op"] == "open") == 800
    assert (src / "d" / "slow").is_dir()


@pytest.mark.parametrize("max_threads,served_at_once", [
    ("2", 2), ("4", 4), ("10", 6), (None, min(6, table.lookup("max_threads").default))])  # type: ignore[union-attr]
def test_max_threads_bounds_the_requests_served_at_once(workdir: Path, max_threads: str | None,
                                                        served_at_once: int) -> None:
    """-o max_threads=N (default: one per core, 2 to 4): six mkdirs that each take 0.3 s (an injected delay), sent at once in six
    directories (the kernel serialises those of one directory), are served N at a time by /dev/fuse's workers (with
    -o io_uring it bounds each CPU's threads: tests/test_io_uring.py)."""
    src = workdir / "src"
    for i in range(6):
        (src / f"d{i}").mkdir(parents=True)
    args = ["--fault", "op=mkdir,delay=300ms", *(["-o", f"max_threads={max_threads}"] if max_threads else [])]
    with Mount(src, workdir / "mnt", *args) as m, ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: os.mkdir(m.mnt / f"d{i}" / "new"), range(6)))
    mkdirs = [e for e in m.events() if e["op"] == "mkdir"]
    assert len(mkdirs) == 6 and all(e["injected"] == "delay" for e in mkdirs)
    spans = [(e["ts"], e["ts"] + e["duration_ns"] / 1e9) for e in mkdirs]
    overlap = max(sum(1 for start, end in spans if start <= t < end) for t, _ in spans)
    assert overlap == served_at_once
    assert all((src / f"d{i}" / "new").is_dir() for i in range(6))


@pytest.mark.parametrize("cpus", [1, 3, 5])
def test_default_workers_follow_the_cpus_the_daemon_may_use(cpus: int) -> None:
    """max_threads' default counts the CPUs of the process's affinity (taskset, cpusets), not the machine's:
    one per CPU, at least 2, at most 4."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < cpus:
        pytest.skip(f"needs {cpus} CPUs, this process may use {len(available)}")
    allowed = set(available[:cpus])
    code = "from fuse_passthrough.options import DEFAULT_MAX_THREADS as n; print(n)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: os.sched_setaffinity(0, allowed))
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == min(4, max(2, cpus))
