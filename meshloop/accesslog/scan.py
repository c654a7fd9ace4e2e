"""Where a protobuf payload breaks: a slow, exact walk over the wire format.

Used only after the fast decoder has rejected a payload, to tell the operator which
byte is wrong. It follows Envoy's real descriptors into sub-messages and checks what a
conforming parser checks: tags, varints, lengths, fixed widths, group nesting, and the
UTF-8 of proto3 ``string`` fields.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_MAX_DEPTH = 100


class _Problem(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason


def _varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(end, pos + 10)):
        value |= (data[i] & 0x7F) << shift
        if data[i] < 0x80:
            return value, i + 1
        shift += 7
    raise _Problem(pos, f"truncated or overlong {what}")


def first_problem(data: bytes) -> tuple[int, str] | None:
    """(byte offset, what is wrong) of the first malformed field of a
    ``StreamAccessLogsMessage`` payload, or None if none is found."""
    from envoy.service.accesslog.v3 import als_pb2

    try:
        _walk(data, 0, len(data), als_pb2.StreamAccessLogsMessage.DESCRIPTOR, 0, None)
    except _Problem as problem:
        return problem.offset, problem.reason
    return None


def _walk(data: bytes, pos: int, end: int, message: Descriptor | None, depth: int, group: int | None) -> int:
    """Check fields from ``pos`` to ``end`` (or to the end-group tag of ``group``);
    return the position after the last byte read."""
    if depth > _MAX_DEPTH:
        raise _Problem(pos, "messages nested too deep")
    while pos < end:
        start = pos
        key, pos = _varint(data, pos, end, "tag")
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _Problem(start, "field number 0")
        if wire_type == 4:
            if group != number:
                raise _Problem(start, f"unexpected end-group tag of field {number}")
            return pos
        if wire_type == 0:
            pos = _varint(data, pos, end, f"varint of field {number}")[1]
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > end:
                raise _Problem(start, f"field {number}: truncated fixed{width * 8}")
            pos += width
        elif wire_type == 2:
            size, pos = _varint(data, pos, end, f"length of field {number}")
            if pos + size > end:
                raise _Problem(start, f"field {number}: length {size} runs past the end")
            field = message.fields_by_number.get(number) if message is not None else None
            _check_payload(data, pos, pos + size, field, depth)
            pos += size
        elif wire_type == 3:
            pos = _walk(data, pos, end, None, depth + 1, number)
        else:
            raise _Problem(start, f"field {number}: invalid wire type {wire_type}")
    if group is not None:
        raise _Problem(end, f"group of field {group} not closed")
    return pos


def _check_payload(data: bytes, pos: int, end: int, field: FieldDescriptor | None, depth: int) -> None:
    if field is None:
        return
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _walk(data, pos, end, field.message_type, depth + 1, None)
    elif field.type == FieldDescriptor.TYPE_STRING:
        try:
            data[pos:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Problem(pos + exc.start, f"field {field.name}: invalid UTF-8") from None
