"""On-disk format of the write-ahead log: segment files (framing, scanning, reading)
and the checkpoint file.

A segment ``wal-<first_seq:020d>.seg`` is a plain sequence of records, each::

    offset  size  field
    0       4     magic b"MLW1"
    4       4     CRC32 (zlib) of bytes 8..36 of the header, the meta and the payload
    8       1     format version (1)
    9       1     flags (0; reserved)
    10      2     kind (uint16, chosen by the caller: which source)
    12      4     meta length
    16      4     payload length
    20      8     seq (uint64, strictly increasing within the log)
    28      8     arrival time, ns since the epoch (int64)
    36      ...   meta, then payload

All integers little-endian. The CRC is computed as ``crc32(tail, crc32(payload,
crc32(meta)))`` (tail = header bytes 8..36) so that the expensive part — meta and
payload — can be checksummed before the writer takes its lock and learns the seq.
:func:`crc32` is zlib's CRC-32, computed by zlib-ng (SIMD: 0.7 against 12 µs for a
64 KiB record here; the values are the same).

A record is *intact* when its header is complete, magic and version match, its
lengths stay inside the file, its seq is above the previous record's and the CRC
matches. Reading stops at the first record that is not intact. Whether that is a
*torn tail* (a crash mid-append: nothing intact follows, safe to truncate) or
*corruption in the middle* (an intact record follows somewhere later) is decided by
:func:`salvage_max_seq`, which searches the rest of the file for intact records.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from zlib_ng.zlib_ng import crc32

MAGIC = b"MLW1"
VERSION = 1
HEADER = struct.Struct("<4sIBBHIIQq")
HEADER_SIZE = HEADER.size  # 36
_PREFIX = struct.Struct("<4sI")
_TAIL = struct.Struct("<BBHIIQq")
MAX_KIND = 0xFFFF
MAX_BLOB = 0xFFFF_FFFF
READ_BUFFER = 1 << 20

_SEGMENT_NAME = re.compile(r"^wal-(\d{20})\.seg$")
CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One accepted message as the WAL stores it.

    ``kind`` says which source it came from (the caller's small int), ``meta`` is the
    caller's small blob (stream identity), ``payload`` the raw serialized message.
    """

    seq: int
    kind: int
    arrival_ns: int
    meta: bytes
    payload: bytes


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record is ``first_seq``."""
    return f"wal-{first_seq:020d}.seg"


def parse_segment_name(name: str) -> int | None:
    """The first seq encoded in a segment file name, or None if ``name`` is no segment."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def encode_header(
    seq: int, kind: int, arrival_ns: int, meta_len: int, payload_len: int, body_crc: int
) -> bytes:
    """The 36-byte header; ``body_crc`` is ``crc32(payload, crc32(meta))``."""
    tail = _TAIL.pack(VERSION, 0, kind, meta_len, payload_len, seq, arrival_ns)
    return _PREFIX.pack(MAGIC, crc32(tail, body_crc)) + tail


def _crc_matches(header: bytes | memoryview, meta: bytes | memoryview, payload: bytes | memoryview) -> bool:
    crc = crc32(header[8:HEADER_SIZE], crc32(payload, crc32(meta)))
    return crc == int.from_bytes(header[4:8], "little")


class SegmentReader:
    """Iterates the intact records of an open segment file from ``start`` (a record's
    first byte; 0 by default) up to ``end``.

    After iteration, ``offset`` is the end of the last intact record and ``damaged``
    tells whether reading stopped before ``end`` at a record that is not intact.
    """

    def __init__(self, file: BinaryIO, end: int, start: int = 0) -> None:
        self._file = file
        self.end = end
        self.offset = start
        self.damaged = False

    def __iter__(self) -> Iterator[WalRecord]:
        if self.offset:
            self._file.seek(self.offset)
        read = self._file.read
        prev_seq = -1
        while self.offset < self.end:
            header = read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                break
            magic, _, version, _, kind, meta_len, payload_len, seq, arrival_ns = HEADER.unpack(header)
            record_end = self.offset + HEADER_SIZE + meta_len + payload_len
            if magic != MAGIC or version != VERSION or record_end > self.end or seq <= prev_seq:
                break
            meta = read(meta_len)
            payload = read(payload_len)
            if len(meta) < meta_len or len(payload) < payload_len or not _crc_matches(header, meta, payload):
                break
            self.offset = record_end
            prev_seq = seq
            yield WalRecord(seq, kind, arrival_ns, meta, payload)
        self.damaged = self.offset < self.end


def open_segment(path: Path) -> BinaryIO:
    """Open a segment for sequential reading (large buffer: records are read in order)."""
    return open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - the caller closes it


def salvage_max_seq(data: bytes) -> int | None:
    """The highest seq among intact records anywhere in ``data`` (the bytes after a
    damaged record), or None when there is none — i.e. the damage is a torn tail."""
    view = memoryview(data)
    best: int | None = None
    pos = data.find(MAGIC)
    while pos != -1:
        end = _intact_record_end(view, pos)
        if end is None:
            pos = data.find(MAGIC, pos + 1)
            continue
        seq = int.from_bytes(view[pos + 20 : pos + 28], "little")
        best = seq if best is None else max(best, seq)
        pos = data.find(MAGIC, end)
    view.release()
    return best


def _intact_record_end(view: memoryview, pos: int) -> int | None:
    if pos + HEADER_SIZE > len(view):
        return None
    magic, _, version, _, _, meta_len, payload_len, _, _ = HEADER.unpack_from(view, pos)
    meta_start = pos + HEADER_SIZE
    end = meta_start + meta_len + payload_len
    if magic != MAGIC or version != VERSION or end > len(view):
        return None
    header = view[pos:meta_start]
    if not _crc_matches(header, view[meta_start : meta_start + meta_len], view[meta_start + meta_len : end]):
        return None
    return end


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What :func:`scan_segment` found in one segment file."""

    size: int
    intact_end: int
    first_seq: int | None
    last_seq: int | None
    records_after: int  # intact records with seq > the ``after_seq`` asked about
    first_after: int | None  # the first of them
    salvage_max_seq: int | None  # highest intact seq beyond the damage, if any

    @property
    def damaged(self) -> bool:
        return self.intact_end < self.size

    @property
    def torn_tail(self) -> bool:
        """Damaged with nothing intact after the damage: a crash mid-append."""
        return self.damaged and self.salvage_max_seq is None


def scan_segment(path: Path, after_seq: int) -> SegmentScan:
    """Read a whole segment, checking every record (CRC included)."""
    with open_segment(path) as file:
        size = os.fstat(file.fileno()).st_size
        reader = SegmentReader(file, size)
        first = last = first_after = None
        count_after = 0
        for record in reader:
            if first is None:
                first = record.seq
            last = record.seq
            if record.seq > after_seq:
                count_after += 1
                if first_after is None:
                    first_after = record.seq
        salvaged = None
        if reader.damaged:
            file.seek(reader.offset)
            salvaged = salvage_max_seq(file.read())
    return SegmentScan(size, reader.offset, first, last, count_after, first_after, salvaged)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ``checkpoint`` file: every record <= ``committed_seq`` reached the store,
    seqs continue at ``next_seq``, ``in_flight`` batch ranges may have reached it."""

    committed_seq: int = 0
    next_seq: int = 1
    in_flight: tuple[tuple[int, int], ...] = ()


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` (the empty one if missing); ValueError if malformed."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Checkpoint()
    try:
        in_flight = tuple((int(a), int(b)) for a, b in raw["in_flight"])
        return Checkpoint(int(raw["committed_seq"]), int(raw["next_seq"]), in_flight)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or malformed field: {exc}") from exc


def write_checkpoint(directory: Path, dir_fd: int, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably: write a temporary file, fsync,
    rename over the old one, fsync the directory."""
    data = {
        "committed_seq": checkpoint.committed_seq,
        "next_seq": checkpoint.next_seq,
        "in_flight": [list(batch) for batch in checkpoint.in_flight],
    }
    tmp = directory / (CHECKPOINT + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(data).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / CHECKPOINT)
    os.fsync(dir_fd)
