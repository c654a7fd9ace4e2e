"""HTTP body compression as ClickHouse's HTTP interface speaks it.

Request bodies may come with ``Content-Encoding`` gzip, deflate, lz4 (LZ4 frames,
possibly several back to back, as clickhouse-connect writes them) or zstd; responses
are compressed when the client enables ``enable_http_compression`` and accepts one of
:data:`ENCODINGS` (https://clickhouse.com/docs/en/interfaces/http#compression).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import lz4.frame

from meshloop.api.clickhouse_protocol import CANNOT_DECOMPRESS, UNKNOWN_COMPRESSION_METHOD, ProtocolError

try:  # Python 3.14+, else the backport clickhouse-connect depends on
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[import-not-found,no-redef]

ENCODINGS = ("lz4", "zstd", "gzip", "deflate")
CHUNK = 1 << 20


def _decompressor(encoding: str) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(wbits=31)
    if encoding == "deflate":
        return zlib.decompressobj()
    if encoding == "lz4":
        return lz4.frame.LZ4FrameDecompressor()
    if encoding == "zstd":
        return zstd.ZstdDecompressor()
    raise ProtocolError(
        UNKNOWN_COMPRESSION_METHOD,
        f"Unknown HTTP compression method '{encoding}' (supported: {', '.join(ENCODINGS)})",
    )


def decoded(body: bytes, encoding: str | None) -> Iterator[bytes]:
    """The request body in chunks, decompressed per ``Content-Encoding`` (concatenated
    frames/members, as clickhouse-connect's lz4 writer sends, included)."""
    if encoding in (None, "identity"):
        view = memoryview(body)
        return (bytes(view[i : i + CHUNK]) for i in range(0, len(body), CHUNK))
    decoder = _decompressor(encoding)  # raise before the thread starts streaming
    return _decode_frames(body, encoding, decoder)


def _decode_frames(body: bytes, encoding: str, decoder: Any) -> Iterator[bytes]:
    view = memoryview(body)
    pending = False  # the current decoder has input but has not reached its end
    try:
        for offset in range(0, len(body), CHUNK):
            data = bytes(view[offset : offset + CHUNK])
            while data:
                pending = True
                out = decoder.decompress(data)
                if out:
                    yield out
                if not decoder.eof:
                    break
                pending = False
                data = decoder.unused_data
                decoder = _decompressor(encoding)
    except Exception as exc:
        raise ProtocolError(CANNOT_DECOMPRESS, f"Cannot decompress {encoding} request body: {exc}") from None
    if pending:
        raise ProtocolError(CANNOT_DECOMPRESS, f"Truncated {encoding} request body")


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "lz4":
        return lz4.frame.compress(body)
    if encoding == "zstd":
        return zstd.compress(body)
    if encoding == "gzip":
        compressor = zlib.compressobj(wbits=31)
        return compressor.compress(body) + compressor.flush()
    return zlib.compress(body)
