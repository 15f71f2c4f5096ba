"""Whether memray closed a capture: the structure of its LZ4 frame.

memray compresses a capture into one LZ4 frame when it closes it, and reads a
frame cut short as far as it can, sometimes without a word. The frame's own
structure says whether it is whole, without decompressing it; the reader
(:mod:`profiler.memory.reader`) turns a cut frame into a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

LZ4_MAGIC = b"\x04\x22\x4d\x18"


def lz4_frame_state(path: Path) -> Literal["whole", "truncated"] | None:
    """Whether a compressed capture's LZ4 frame is whole; None for an uncompressed file.

    memray compresses a capture into one LZ4 frame when it closes it. memray reads a
    frame cut short as far as it can, sometimes without a word; the frame's own
    structure (https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md: block
    sizes, then a zero end mark) tells. Only block headers are read: one seek per
    64 KiB of records.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(6)
        if head[:4] != LZ4_MAGIC:
            return None
        if len(head) < 6:
            return "truncated"
        flags = head[4]
        block_checksum = 4 if flags & 0x10 else 0
        content_checksum = 4 if flags & 0x04 else 0
        # magic, FLG, BD, [content size], [dictionary id], header checksum
        position = 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1
        while True:
            file.seek(position)
            word = file.read(4)
            if len(word) < 4:
                return "truncated"
            block = int.from_bytes(word, "little")
            if block == 0:  # the end mark
                return "whole" if position + 4 + content_checksum <= size else "truncated"
            position += 4 + (block & 0x7FFFFFFF) + block_checksum
            if position > size:
                return "truncated"
