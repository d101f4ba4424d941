"""Compressed trace files: `.zst` and `.gz` written by the trace writer, read back by `report`.

Writing: the codec comes from the output file's name (`trace.jsonl.zst`, `trace.jsonl.gz`; anything else is
plain). Every batch of events is compressed and flushed as a complete block (a zstd block flush, a deflate
sync flush), so whatever has been written is decodable at once: a reader of a live file sees every event up to
the last batch, and a writer killed with SIGKILL loses only the end-of-stream marker. Each file is one frame
(zstd) or one member (gzip), finished when the file is closed or rotated, so every rotated file is a complete
file on its own.

Reading: the codec comes from the first bytes of the file (its magic number), not from its name, so rotated
files (`trace.jsonl.zst.1`) and renamed ones read alike. `TraceReader.blocks()` yields the decompressed bytes;
a compressed stream that ends early (the writer was killed, or is still writing) sets `truncated` instead of
raising, after everything before the cut has been yielded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO

import zstandard

ZSTD_LEVEL = 1  # on trace JSON, level 1 compresses as well as the default 3 (block-flushed), and faster
GZIP_LEVEL = 1  # level 6 compresses ~40% better but costs the writer 3x as much CPU per event
CODECS = {".zst": "zstd", ".gz": "gzip"}
_MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\x1f\x8b": "gzip"}
# Worst-case bytes a file's end (the frame's last block and checksum, the gzip trailer) or a fresh file's
# header can add beyond the compressed data itself.
RESERVE = 64
_READ_SIZE = 1 << 18


def codec_for(path: str) -> str | None:
    """'zstd' or 'gzip' for an output file named *.zst or *.gz; None (plain) otherwise."""
    for suffix, codec in CODECS.items():
        if path.endswith(suffix):
            return codec
    return None


def bound(n: int) -> int:
    """An upper bound of the compressed size of n bytes with either codec, block flush included."""
    return n + (n >> 7) + RESERVE


class Compressor:
    """One compressed stream (a zstd frame, a gzip member) written one flushed block at a time."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._zstd: zstandard.ZstdCompressionObj | None = None
        self._zlib: zlib._Compress | None = None
        if codec == "zstd":
            self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
        elif codec == "gzip":
            self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
        else:
            raise ValueError(f"unknown codec {codec!r}")

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """The compressed bytes of `data`, flushed: a reader can decode everything written so far."""
        if self._zstd is not None:
            return self._zstd.compress(data) + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        assert self._zlib is not None
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The end of the stream: the file is complete after these bytes."""
        if self._zstd is not None:
            return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        assert self._zlib is not None
        return self._zlib.flush(zlib.Z_FINISH)


class CorruptTrace(ValueError):
    """The compressed data is damaged (not merely cut short)."""


class TraceReader:
    """A trace file, plain or compressed, as decompressed blocks; see the module docstring."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        head = f.read(4)
        self.codec = next((c for magic, c in _MAGIC.items() if head.startswith(magic)), None)
        self._head = head
        self.consumed = 0  # bytes of the file read so far (compressed bytes for a compressed file)
        self.truncated = False  # a compressed stream ended before its end marker

    def blocks(self, size: int = 1 << 20) -> Iterator[bytes]:
        if self.codec is None:
            data = self._head + self._f.read(max(size - len(self._head), 1))
            while data:
                self.consumed += len(data)
                yield data
                data = self._f.read(size)
            return
        yield from self._decompressed()

    def _decompressor(self) -> zstandard.ZstdDecompressionObj | zlib._Decompress:
        if self.codec == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        return zlib.decompressobj(31)

    def _decompressed(self) -> Iterator[bytes]:
        d = self._decompressor()
        started = False  # the current frame / member has received input
        data = self._head
        while True:
            if not data:
                data = self._f.read(_READ_SIZE)
                if not data:
                    break
            self.consumed += len(data)
            while data:
                try:
                    out = d.decompress(data)
                except (zstandard.ZstdError, zlib.error) as e:
                    raise CorruptTrace(f"corrupt {self.codec} data near byte {self.consumed}: {e}") from None
                started = True
                if out:
                    yield out
                if d.eof:  # a frame or member ended; another may follow (concatenated files)
                    data = d.unused_data
                    d = self._decompressor()
                    started = False
                else:
                    data = b""
        self.truncated = started
