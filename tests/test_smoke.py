from helpers import Mount


def test_write_then_read_through_mount(mount: Mount) -> None:
    (mount.mnt / "f").write_bytes(b"hello")
    assert (mount.src / "f").read_bytes() == b"hello"
    assert (mount.mnt / "f").read_bytes() == b"hello"
    assert mount.unmount() == 0
    ops = [e["op"] for e in mount.events()]
    assert "create" in ops and "write" in ops and "read" in ops
