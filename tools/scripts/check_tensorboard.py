#!/usr/bin/env python3
"""Reads a TensorBoard event file written by longnet with TensorBoard's own reader and checks it.

  check_tensorboard.py runs/quickstart/tensorboard/events.out.tfevents.1700000000.host
  check_tensorboard.py EVENTS_FILE --expect-tag train/loss --expect-tag train/lr --min-points 3

The file is read with tensorboard.backend.event_processing.event_accumulator, or, when only
TensorFlow is installed, with tf.compat.v1.train.summary_iterator. Prints one line per scalar tag
(points, first and last step, last value). The TFRecord framing and its CRC-32C checksums are
verified here as well, since TensorBoard's reader stops quietly at a damaged record. Exit status
0 when the framing is valid, the file reads, holds scalars, every --expect-tag is present with at
least --min-points points, and all values are finite; 1 with the problems otherwise; 2 when no
reader is installed or the file cannot be read.
"""
import argparse
import math
import os
import sys


def _crc32c_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _CRC32C[(c ^ b) & 0xFF]
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_framing(path):
    """Problems with the TFRecord framing (TensorBoard's reader stops quietly at a bad record)."""
    data = open(path, "rb").read()
    pos, n = 0, 0
    while pos < len(data):
        if pos + 12 > len(data):
            return [f"record {n}: truncated header at byte {pos}"]
        length = int.from_bytes(data[pos:pos + 8], "little")
        if int.from_bytes(data[pos + 8:pos + 12], "little") != _masked_crc32c(data[pos:pos + 8]):
            return [f"record {n}: bad length checksum at byte {pos}"]
        end = pos + 12 + length
        if end + 4 > len(data):
            return [f"record {n}: truncated payload at byte {pos}"]
        if int.from_bytes(data[end:end + 4], "little") != _masked_crc32c(data[pos + 12:end]):
            return [f"record {n}: bad payload checksum at byte {pos}"]
        pos, n = end + 4, n + 1
    print(f"{n} records, framing and checksums valid")
    return []


def read_with_tensorboard(path):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_with_tensorflow(path):
    import tensorflow as tf

    scalars = {}
    for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events_file")
    parser.add_argument("--expect-tag", action="append", default=[], help="a scalar tag that must be present")
    parser.add_argument("--min-points", type=int, default=1, help="points each expected tag must have")
    args = parser.parse_args()

    if not os.path.isfile(args.events_file):
        print(f"error: no such file: {args.events_file}", file=sys.stderr)
        return 2
    scalars = None
    errors = []
    for reader in (read_with_tensorboard, read_with_tensorflow):
        try:
            scalars = reader(args.events_file)
            print(f"read with {reader.__name__[len('read_with_'):]}")
            break
        except ImportError as e:
            errors.append(f"{reader.__name__}: {e}")
        except Exception as e:  # a reader that is installed but rejects the file
            print(f"error: {reader.__name__} cannot read {args.events_file}: {e!r}", file=sys.stderr)
            return 2
    if scalars is None:
        print("error: neither tensorboard nor tensorflow is installed (pip install tensorboard):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 2

    problems = check_framing(args.events_file)
    if not scalars:
        problems.append("the file holds no scalar summaries")
    for tag in sorted(scalars):
        points = scalars[tag]
        steps = [s for s, _ in points]
        print(f"{tag:32s} {len(points):6d} points  steps {steps[0]}..{steps[-1]}  last {points[-1][1]:.6g}")
        bad = [(s, v) for s, v in points if not math.isfinite(v)]
        if bad:
            problems.append(f"{tag}: {len(bad)} non-finite values (first at step {bad[0][0]})")
    for tag in args.expect_tag:
        if tag not in scalars:
            problems.append(f"missing tag {tag}")
        elif len(scalars[tag]) < args.min_points:
            problems.append(f"{tag}: {len(scalars[tag])} points, expected at least {args.min_points}")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
