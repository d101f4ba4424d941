"""EventFilter keeps exactly what each criterion says."""

import os

import pytest

from fuse_passthrough.tracing.filters import EventFilter, ProcessTree


def keep(f: EventFilter, op="getattr", args=("/a/b.py", None), err=0, pid=10, uid=1000, comm="cat",
         result=None) -> bool:
    return f.accepts_op(op) and (not f.active or f.accepts(op, args, err, pid, uid, comm, result))


def test_no_criteria_keeps_everything() -> None:
    f = EventFilter()
    assert not f.active and keep(f) and keep(f, err=2)


def test_ops_and_exclude_ops() -> None:
    f = EventFilter(ops=["open", "read"])
    assert keep(f, op="open", args=("/x", 0)) and not keep(f, op="getattr")
    f = EventFilter(exclude_ops=["getattr"])
    assert not keep(f) and keep(f, op="open", args=("/x", 0))


def test_unknown_op_is_rejected() -> None:
    with pytest.raises(ValueError, match="nosuchop"):
        EventFilter(ops=["nosuchop"])


def test_path_globs_match_path_or_path2() -> None:
    f = EventFilter(paths=["*.py", "/docs/*"])
    assert keep(f, args=("/a/b.py", None))
    assert keep(f, op="rename", args=("/x", "/docs/y", 0))
    assert not keep(f, args=("/a/b.txt", None))


def test_pid_uid_comm_errors() -> None:
    assert keep(EventFilter(pids=[10])) and not keep(EventFilter(pids=[11]))
    assert keep(EventFilter(uids=[1000])) and not keep(EventFilter(uids=[0]))
    assert keep(EventFilter(comms=["cat"])) and not keep(EventFilter(comms=["ls"]))
    f = EventFilter(errors_only=True)
    assert keep(f, err=2) and not keep(f)


def test_criteria_combine_with_and() -> None:
    f = EventFilter(comms=["cat"], errors_only=True)
    assert keep(f, err=2) and not keep(f) and not keep(f, err=2, comm="ls")


def test_process_tree_follows_descendants_and_their_kernel_releases() -> None:
    me = os.getpid()
    tree = ProcessTree(os.getppid())
    assert tree.is_member(me)  # our parent is the root: we descend from it
    assert not ProcessTree(me).is_member(os.getppid())
    assert tree.accepts("open", ("/f", 0), 0, me, result=9)
    assert tree.accepts("release", ("/f", 9), 0, 0)  # kernel-issued, on a member's handle
    assert not tree.accepts("release", ("/g", 12), 0, 0)  # kernel-issued, someone else's handle


def test_process_tree_keeps_both_releases_of_a_handle_number_given_again() -> None:
    """A worker thread records the release of fh 9 after another recorded the open that got 9 again: the kernel's
    release of the new open is still a member's."""
    me = os.getpid()
    tree = ProcessTree(me)
    assert tree.accepts("open", ("/f", 0), 0, me, result=9)
    assert tree.accepts("open", ("/f", 0), 0, me, result=9)  # recorded before the first one's release
    assert tree.accepts("release", ("/f", 9), 0, 0)
    assert tree.accepts("release", ("/f", 9), 0, 0)
    assert not tree.accepts("release", ("/f", 9), 0, 0)  # both gone: a third is someone else's


def test_process_tree_follows_passthrough_opens() -> None:
    me = os.getpid()
    tree = ProcessTree(me)
    assert tree.accepts("open", ("/f", 0), 0, me, result=(7, 1))  # (fh, backing id)
    assert tree.accepts("release", ("/f", 7), 0, 0)
