"""The low-level binding's ctypes declarations against what gcc makes of libfuse's headers, per version.

For each set of headers found (the system's via pkg-config: 3.14 on Debian 12; the 3.17 build in
.cache/libfuse-3.17, made by `make libfuse-3.17`), a C program generated from the declarations in
fuse_passthrough.lowlevel.abi prints the size of every declared struct, the offset and size of every declared
field (naming each field in C, so a misspelt or missing field fails to compile), the bytes of each bitfield set
to all ones, whether every fuse_lowlevel_ops member and every bound function has exactly the C type the binding
declares (__builtin_types_compatible_p), and the value of each constant. The test compares all of it.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fuse_passthrough.lowlevel import abi

ROOT = Path(__file__).resolve().parents[2]


def _system_include() -> Path | None:
    if not shutil.which("pkg-config"):
        return None
    r = subprocess.run(["pkg-config", "--variable=includedir", "fuse3"], capture_output=True, text=True)
    d = Path(r.stdout.strip()) / "fuse3"
    return d if r.returncode == 0 and (d / "fuse_lowlevel.h").exists() else None


def _built_317_include() -> Path | None:
    candidates = [ROOT / ".cache/libfuse-3.17/include/fuse3"]
    lib = os.environ.get("FUSE_LIBRARY_PATH")
    if lib:
        candidates.insert(0, Path(lib).resolve().parent.parent / "include/fuse3")
    return next((d for d in candidates if (d / "fuse_lowlevel.h").exists()), None)


def _header_version(include: Path) -> tuple[int, int]:
    text = "".join((include / f).read_text() for f in ("fuse_common.h", "libfuse_config.h")
                   if (include / f).exists())
    major = re.search(r"#define\s+FUSE_MAJOR_VERSION\s+(\d+)", text)
    minor = re.search(r"#define\s+FUSE_MINOR_VERSION\s+(\d+)", text)
    assert major and minor, f"no FUSE_MAJOR/MINOR_VERSION in {include}"
    return int(major.group(1)), int(minor.group(1))


def _fields(cls: type[ctypes.Structure]) -> list[tuple[str, object, int | None]]:
    return [(f[0], f[1], f[2] if len(f) > 2 else None) for f in cls._fields_]  # type: ignore[misc]


def _c_type(kind: abi.Kind) -> str:
    return kind.c


def _c_program(layout: abi.Layout) -> str:
    out = [f"#define FUSE_USE_VERSION {layout.use_version}", "#define _GNU_SOURCE",
           "#include <fuse_lowlevel.h>", "#include <sys/stat.h>", "#include <sys/statvfs.h>", "#include <fcntl.h>",
           "#include <stddef.h>", "#include <stdio.h>", "#include <string.h>",
           "#if FUSE_USE_VERSION < 312", "#define fuse_loop_config_v1 fuse_loop_config", "#endif",
           "static void hex(const char *s, const char *f, const void *p, size_t n) {",
           "  printf(\"bits %s %s \", s, f);",
           "  for (size_t i = 0; i < n; i++) printf(\"%02x\", ((const unsigned char *)p)[i]);",
           "  printf(\"\\n\");", "}",
           "int main(void) {",
           '  printf("version %d %d\\n", FUSE_MAJOR_VERSION, FUSE_MINOR_VERSION);']
    for cls in layout.structs():
        c = cls._c_name_  # type: ignore[attr-defined]
        out.append(f'  printf("size {c} %zu\\n", sizeof({c}));')
        for name, _, bits in _fields(cls):
            if bits is None:
                out.append(f'  printf("field {c} {name} %zu %zu\\n", offsetof({c}, {name}), '
                           f"sizeof((({c} *)0)->{name}));")
            else:
                out.append(f"  {{ {c} s; memset(&s, 0, sizeof s); s.{name} = -1; "
                           f'hex("{c}", "{name}", &s, sizeof s); }}')
    for name, kinds in layout.op_kinds:
        sig = f"void (*)({', '.join(_c_type(k) for k in kinds)})"
        out.append(f'  printf("op {name} %d\\n", __builtin_types_compatible_p('
                   f"__typeof__(((struct fuse_lowlevel_ops *)0)->{name}), {sig}));")
    for fn in layout.functions():
        c_name = fn.checked_as or fn.symbol
        sig = f"{fn.restype.c} (*)({', '.join(_c_type(k) for k in fn.args) or 'void'})"
        guard = "#if FUSE_USE_VERSION >= 312" if fn.checked_as == "fuse_session_loop_mt" else "#if 1"
        out += [guard, f'  printf("fn {fn.symbol} %d\\n", __builtin_types_compatible_p('
                       f"__typeof__(&{c_name}), {sig}));", "#endif"]
    for name in abi.CONSTANTS:
        if name.startswith("FUSE_BUF_"):  # enum members
            out.append(f'  printf("const {name} %lld\\n", (long long){name});')
        else:
            out += [f"#ifdef {name}", f'  printf("const {name} %lld\\n", (long long){name});', "#endif"]
    out += ["  return 0;", "}", ""]
    return "\n".join(out)


def _compile_and_run(layout: abi.Layout, include: Path, work: Path) -> list[list[str]]:
    src = work / f"layout_{layout.version[0]}{layout.version[1]}.c"
    exe = src.with_suffix("")
    src.write_text(_c_program(layout))
    r = subprocess.run(["gcc", "-Wall", "-D_FILE_OFFSET_BITS=64", f"-I{include}", "-o", str(exe), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"gcc failed on {src}:\n{r.stderr[-4000:]}"
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    return [line.split(" ") for line in r.stdout.splitlines()]


def _check(layout: abi.Layout, include: Path, work: Path) -> dict[str, int]:
    lines = _compile_and_run(layout, include, work)
    assert lines[0] == ["version", str(layout.version[0]), str(layout.version[1])]
    sizes: dict[str, int] = {}
    fields: dict[tuple[str, str], tuple[int, int]] = {}
    bits: dict[tuple[str, str], str] = {}
    ops: dict[str, bool] = {}
    fns: dict[str, bool] = {}
    consts: dict[str, int] = {}
    for line in lines[1:]:
        kind, rest = line[0], line[1:]
        if kind == "size":  # size struct NAME N
            sizes[" ".join(rest[:-1])] = int(rest[-1])
        elif kind == "field":  # field struct NAME FIELD OFF SIZE
            fields[(" ".join(rest[:2]), rest[2])] = (int(rest[3]), int(rest[4]))
        elif kind == "bits":
            bits[(" ".join(rest[:2]), rest[2])] = rest[3]
        elif kind == "op":
            ops[rest[0]] = rest[1] == "1"
        elif kind == "fn":
            fns[rest[0]] = rest[1] == "1"
        elif kind == "const":
            consts[rest[0]] = int(rest[1])
    errors: list[str] = []
    counts = {"structs": 0, "fields": 0, "bitfields": 0, "ops": 0, "functions": 0, "constants": 0}
    for cls in layout.structs():
        c = cls._c_name_  # type: ignore[attr-defined]
        if ctypes.sizeof(cls) != sizes[c]:
            errors.append(f"sizeof({c}): ctypes {ctypes.sizeof(cls)}, C {sizes[c]}")
        counts["structs"] += 1
        for name, _, width in _fields(cls):
            if width is None:
                desc = getattr(cls, name)
                mine = (desc.offset, desc.size)
                if mine != fields[(c, name)]:
                    errors.append(f"{c}.{name}: ctypes offset/size {mine}, C {fields[(c, name)]}")
                counts["fields"] += 1
            else:
                s = cls()
                setattr(s, name, (1 << width) - 1)
                if bytes(s).hex() != bits[(c, name)]:
                    errors.append(f"{c}.{name} (bitfield): ctypes {bytes(s).hex()}, C {bits[(c, name)]}")
                counts["bitfields"] += 1
    by_offset = sorted((fields[("struct fuse_lowlevel_ops", n)][0], n) for n, _ in layout.op_kinds)
    if [n for _, n in by_offset] != [n for n, _ in layout.op_kinds]:
        errors.append("fuse_lowlevel_ops: member order differs")
    for name, ok in ops.items():
        counts["ops"] += 1
        if not ok:
            errors.append(f"fuse_lowlevel_ops.{name}: C type differs from the declared argument kinds")
    for fn in layout.functions():
        if fn.symbol not in fns:
            assert fn.checked_as == "fuse_session_loop_mt" and layout.use_version < 312
            continue
        counts["functions"] += 1
        if not fns[fn.symbol]:
            errors.append(f"{fn.symbol}: C type differs from the declaration")
    for name, value in consts.items():
        counts["constants"] += 1
        if abi.CONSTANTS[name] != value:
            errors.append(f"{name}: ours {abi.CONSTANTS[name]}, C {value}")
    if layout.version >= (3, 17):
        missing = set(abi.CONSTANTS) - set(consts)
        if missing:
            errors.append(f"constants not in the 3.17 headers: {sorted(missing)}")
    assert not errors, "\n".join(errors)
    return counts


def _include_for(version: str) -> Path:
    if version == "3.14":
        inc = _system_include()
        if inc is None:
            pytest.skip("no libfuse3 headers (pkg-config fuse3; apt-get install libfuse3-dev)")
        if _header_version(inc) != (3, 14):
            pytest.skip(f"the system's libfuse headers are {_header_version(inc)}, not 3.14")
        return inc
    inc = _built_317_include()
    if inc is None:
        sys_inc = _system_include()
        if sys_inc is not None and _header_version(sys_inc) >= (3, 17):
            inc = sys_inc
        else:
            pytest.skip("libfuse 3.17 headers absent: `make libfuse-3.17` builds them into .cache/libfuse-3.17")
    assert _header_version(inc)[:2] >= (3, 17)
    return inc


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is needed to compile the layout probes")
@pytest.mark.parametrize("version", ["3.14", "3.17"])
def test_layout_matches_headers(version: str, tmp_path: Path) -> None:
    inc = _include_for(version)
    layout = abi.layout_for(_header_version(inc))
    assert layout.version == tuple(int(x) for x in version.split("."))
    counts = _check(layout, inc, tmp_path)
    # Everything declared was compared (and nothing silently skipped).
    assert counts["structs"] == len(layout.structs())
    assert counts["ops"] == len(layout.op_kinds)
    print(f"libfuse {version} ({inc}): {counts}")


def test_layout_choice() -> None:
    assert abi.layout_for((3, 14)) is abi.LAYOUT_314
    assert abi.layout_for((3, 12)) is abi.LAYOUT_314
    assert abi.layout_for((3, 17)) is abi.LAYOUT_317
    assert abi.layout_for((3, 18)) is abi.LAYOUT_317
    for unsupported in [(3, 10), (3, 16), (2, 9)]:
        with pytest.raises(ImportError):
            abi.layout_for(unsupported)


TRAMPOLINES_C = ROOT / "src/fuse_passthrough/lowlevel/_trampolines.c"


def _offered(layout: abi.Layout) -> set[str]:
    from fuse_passthrough.lowlevel.binding import LIFECYCLE, NOT_OFFERED
    return {name for name, _ in layout.op_kinds} - LIFECYCLE - NOT_OFFERED


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is needed to compile the trampolines against the headers")
@pytest.mark.parametrize("version", ["3.14", "3.17"])
def test_trampolines_have_the_types_of_the_ops(version: str, tmp_path: Path) -> None:
    """_trampolines.c declares its entry points without libfuse's headers; compiled with them
    (FPT_CHECK_SIGNATURES), each is assigned to its fuse_lowlevel_ops member, and -Werror turns any difference of
    type into a failure. Every operation the binding offers on this version is checked."""
    import sysconfig

    inc = _include_for(version)
    layout = abi.layout_for(_header_version(inc))
    r = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Werror", "-DFPT_CHECK_SIGNATURES",
                        f"-DFUSE_USE_VERSION={layout.use_version}", f"-I{inc}",
                        f"-I{sysconfig.get_paths()['include']}", str(TRAMPOLINES_C)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    checked = set(re.findall(r"o->(\w+) = t_\1;", TRAMPOLINES_C.read_text()))
    assert _offered(layout) <= checked, _offered(layout) - checked


URING_C = ROOT / "src/fuse_passthrough/lowlevel/uring.c"


@pytest.mark.skipif(not shutil.which("gcc") or not Path("/usr/include/liburing.h").exists(),
                    reason="gcc and liburing's headers are needed to compile uring.c")
@pytest.mark.parametrize("version", ["3.14", "3.17"])
def test_io_uring_structs_match_the_headers(version: str) -> None:
    """uring.c declares struct fuse_buf, the kernel's request and reply headers and the io_uring structs itself;
    compiled with each version's headers and the system's linux/fuse.h (FPT_CHECK_SIGNATURES), static assertions
    compare them, and fuse_session_process_buf must have the type it is called with. Where linux/fuse.h predates
    io_uring (Linux < 6.14 headers), the io_uring structs are checked against the kernel's documented sizes."""
    inc = _include_for(version)
    layout = abi.layout_for(_header_version(inc))
    r = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Werror", "-DFPT_CHECK_SIGNATURES", "-DFPT_HAVE_URING",
                        f"-DFUSE_USE_VERSION={layout.use_version}", f"-I{inc}", str(URING_C)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_trampoline_for_every_offered_operation() -> None:
    """The built module (make installs it: gcc and python3-dev are among the packages) has a trampoline for each
    operation LowLevelSession offers, and none for the others."""
    from fuse_passthrough.lowlevel import _trampolines

    for layout in (abi.LAYOUT_314, abi.LAYOUT_317):
        offered = _offered(layout)
        for name, _ in layout.op_kinds:
            if name in offered:
                assert _trampolines.trampoline(name) > 0
            else:
                with pytest.raises(KeyError):
                    _trampolines.trampoline(name)
