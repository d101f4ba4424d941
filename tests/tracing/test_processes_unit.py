"""Process names for events (tracing/processes.py)."""


def test_process_names_exact_while_young_then_cached(tmp_path) -> None:
    import ctypes
    import threading

    from fuse_passthrough.tracing.processes import ProcessNames

    result: dict[str, object] = {}

    def in_thread() -> None:  # rename a thread of ours, not the test process; /proc/PID/task/TID/comm
        tid = threading.get_native_id()
        names = ProcessNames()
        set_name = ctypes.CDLL(None).prctl
        set_name(15, b"fpt-first", 0, 0, 0)
        ms = 1_000_000
        result["first"] = names.lookup(tid, 0)[0]
        set_name(15, b"fpt-exec", 0, 0, 0)          # like exec right after fork
        result["young"] = names.lookup(tid, 10 * ms)[0]
        set_name(15, b"fpt-later", 0, 0, 0)
        result["cached"] = names.lookup(tid, 100 * ms)[0]   # older than YOUNG_NS, read less than TTL_NS ago
        result["refreshed"] = names.lookup(tid, 2000 * ms)[0]
        result["gone"] = names.lookup(2**22 + 12345, 0)
        names.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert (result["first"], result["young"], result["cached"], result["refreshed"]) == (
        "fpt-first", "fpt-exec", "fpt-exec", "fpt-later")
    assert result["gone"] == (None, None)


def test_parent_pid_from_status_even_with_a_name_that_looks_like_a_field(tmp_path) -> None:
    import os
    import subprocess

    from fuse_passthrough.tracing.processes import parent_pid

    assert parent_pid(os.getpid()) == os.getppid()
    # exec -a cannot rename comm; a script file named like a status field can
    script = tmp_path / "x) PPid: 1\nPPid: 1"
    script.write_text("#!/bin/sh\nsleep 5\n")
    script.chmod(0o755)
    child = subprocess.Popen([str(script)])
    try:
        assert parent_pid(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert parent_pid(child.pid) == 0  # gone (reaped)
