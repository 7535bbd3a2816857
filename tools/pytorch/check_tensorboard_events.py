#!/usr/bin/python3
"""Decodes TensorBoard event files with the protobuf library, independently of ctsr's own reader
(train/tensorboard.cpp): its own CRC-32C (bit by bit) checks the TFRecord framing, and messages
built here from descriptors with event.proto / summary.proto's field numbers parse each payload.
Prints every event; exits non-zero on a bad CRC, a payload protobuf refuses, a missing
file_version in the first event, or an image whose PNG header disagrees with its Image fields.
Not run by CI (it needs python3-protobuf):
    CTSR_TEST_KEEP_DIR=/tmp/tb build/tests/ctsr_tests --gtest_filter=TensorBoard.EventsRoundTrip
    /usr/bin/python3 tools/pytorch/check_tensorboard_events.py /tmp/tb/events.out.tfevents.*
"""

import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def masked(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def field(message, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None, oneof=None):
    f = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof


def event_class():
    """tensorflow.Event, Summary, Summary.Value and Summary.Image, with the fields ctsr writes."""
    fdp = descriptor_pb2.FileDescriptorProto(name="ctsr_check_event.proto", package="ctsr_check", syntax="proto3")
    summary = fdp.message_type.add(name="Summary")
    image = summary.nested_type.add(name="Image")
    field(image, "height", 1, F.TYPE_INT32)
    field(image, "width", 2, F.TYPE_INT32)
    field(image, "colorspace", 3, F.TYPE_INT32)
    field(image, "encoded_image_string", 4, F.TYPE_BYTES)
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    field(value, "tag", 1, F.TYPE_STRING)
    field(value, "simple_value", 2, F.TYPE_FLOAT, oneof=0)
    field(value, "image", 4, F.TYPE_MESSAGE, type_name=".ctsr_check.Summary.Image", oneof=0)
    field(summary, "value", 1, F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".ctsr_check.Summary.Value")
    event = fdp.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    field(event, "wall_time", 1, F.TYPE_DOUBLE)
    field(event, "step", 2, F.TYPE_INT64)
    field(event, "file_version", 3, F.TYPE_STRING, oneof=0)
    field(event, "summary", 5, F.TYPE_MESSAGE, type_name=".ctsr_check.Summary", oneof=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    descriptor = pool.FindMessageTypeByName("ctsr_check.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def records(path):
    data = open(path, "rb").read()
    pos, index = 0, 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise ValueError(f"{path}: record {index} truncated in its header")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked(crc32c(header)):
            raise ValueError(f"{path}: record {index}: length CRC mismatch")
        payload = data[pos + 12:pos + 12 + length]
        if len(payload) != length or len(data) < pos + 16 + length:
            raise ValueError(f"{path}: record {index} truncated")
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if payload_crc != masked(crc32c(payload)):
            raise ValueError(f"{path}: record {index}: payload CRC mismatch")
        yield index, payload
        pos += 16 + length
        index += 1


def check(path, Event):
    for index, payload in records(path):
        event = Event.FromString(payload)
        kind = event.WhichOneof("what")
        if index == 0 and (kind != "file_version" or event.file_version != "brain.Event:2"):
            raise ValueError(f"{path}: the first event has no file_version brain.Event:2")
        line = f"record {index}: wall_time {event.wall_time:.3f} step {event.step}"
        if kind == "file_version":
            line += f" file_version {event.file_version!r}"
        for v in event.summary.value:
            if v.WhichOneof("value") == "simple_value":
                line += f" | {v.tag!r} = {v.simple_value!r}"
            elif v.WhichOneof("value") == "image":
                png = v.image.encoded_image_string
                if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
                    raise ValueError(f"{path}: record {index}: image {v.tag!r} is not a PNG")
                width, height = struct.unpack(">II", png[16:24])
                if (width, height) != (v.image.width, v.image.height):
                    raise ValueError(f"{path}: record {index}: PNG is {width} x {height}, Image says "
                                     f"{v.image.width} x {v.image.height}")
                line += (f" | {v.tag!r} = image {v.image.width} x {v.image.height} colorspace "
                         f"{v.image.colorspace}, {len(png)} PNG bytes")
        print(line)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    Event = event_class()
    for path in sys.argv[1:]:
        print(path)
        check(path, Event)
    print("ok")


if __name__ == "__main__":
    main()
