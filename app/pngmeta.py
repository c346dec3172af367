"""Job parameters carried inside stored PNG files, so the files alone can rebuild the library.

Owns one `iTXt` chunk with the keyword `atelier` whose text is the job's parameters as compact
JSON, and what goes into it (`image_metadata`). The chunk is spliced in right after IHDR by
rewriting the chunk list by hand: the pixel data (IDAT) is copied byte for byte, never decoded
or re-encoded.

PNG layout: an 8-byte signature, then chunks of length (4 bytes, big-endian), type (4 bytes),
data (length bytes) and a CRC-32 of type + data (4 bytes), ending with IEND.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.jobs import Claim
    from app.providers.base import ImageSlot

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"atelier"
MAX_CHUNK_LENGTH = 2**31 - 1  # the PNG specification's limit


@dataclass(frozen=True)
class Chunk:
    type: bytes
    data: bytes


def embed(data: bytes, metadata: dict[str, Any]) -> bytes:
    """Return the PNG with `metadata` in one `atelier` iTXt chunk right after IHDR.

    An existing `atelier` chunk is replaced, so embedding twice gives the same bytes as once.
    Bytes that are not a PNG come back unchanged; a damaged PNG raises ValueError.
    """
    if not data.startswith(SIGNATURE):
        return data
    chunks, trailer = _parse(data)
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    header = b"".join(
        [
            KEYWORD + b"\x00",
            b"\x00\x00",  # compression flag and method: uncompressed
            b"\x00",  # empty language tag
            b"\x00",  # empty translated keyword
        ]
    )
    ours = Chunk(b"iTXt", header + text.encode("utf-8"))
    kept = [chunk for chunk in chunks if not _is_ours(chunk)]
    return SIGNATURE + b"".join(_serialize(c) for c in [kept[0], ours, *kept[1:]]) + trailer


def read(data: bytes) -> dict[str, Any] | None:
    """The metadata `embed` stored, or None for other bytes or a PNG without it.

    Raises ValueError for a damaged PNG or an `atelier` chunk that does not hold a JSON object.
    """
    if not data.startswith(SIGNATURE):
        return None
    chunks, _ = _parse(data)
    for chunk in chunks:
        if _is_ours(chunk):
            value = json.loads(_itxt_text(chunk.data))
            if not isinstance(value, dict):
                raise ValueError("The atelier chunk does not hold a JSON object.")
            return value
    return None


def image_metadata(
    claim: Claim, slot: ImageSlot, inputs: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """What a stored PNG carries about its job, enough to rebuild the library from files.

    An edit's output also names its inputs (`inputs`: (role, sha256) pairs, in order),
    whose files are content-addressed beside it, so `rebuild` can link them again."""
    metadata = {
        "atelier": 1,
        "job_id": claim.job_id,
        "index": slot.index,
        "prompt": claim.prompt,
        "revised_prompt": slot.revised_prompt,
        "provider": claim.provider,
        "model": claim.model,
        "size": claim.size,
        "n": claim.n,
        "options": claim.options,
        "created_at": claim.created_at.isoformat().replace("+00:00", "Z"),
    }
    if inputs:
        metadata["kind"] = "edit"
        metadata["inputs"] = [{"role": role, "sha256": digest} for role, digest in inputs]
    return metadata


def _is_ours(chunk: Chunk) -> bool:
    return chunk.type == b"iTXt" and chunk.data.split(b"\x00", 1)[0] == KEYWORD


def _itxt_text(payload: bytes) -> str:
    try:
        keyword, rest = payload.split(b"\x00", 1)
        compressed, method = rest[0], rest[1]
        _language, rest = rest[2:].split(b"\x00", 1)
        _translated, text = rest.split(b"\x00", 1)
        if compressed:
            if method != 0:
                raise ValueError(f"unknown iTXt compression method {method}")
            text = zlib.decompress(text)
        return text.decode("utf-8")
    except (IndexError, ValueError, zlib.error) as error:
        raise ValueError(f"The atelier iTXt chunk is malformed ({error}).") from None


def _parse(data: bytes) -> tuple[list[Chunk], bytes]:
    """Split a PNG into its chunks (CRCs checked) and whatever follows IEND."""
    chunks: list[Chunk] = []
    offset = len(SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise ValueError("The PNG ends before its IEND chunk.")
        length, chunk_type = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 8 + length + 4
        if length > MAX_CHUNK_LENGTH or end > len(data):
            raise ValueError(f"The PNG chunk at byte {offset} runs past the end of the file.")
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(payload, zlib.crc32(chunk_type)) != crc:
            raise ValueError(f"The PNG chunk {chunk_type!r} at byte {offset} has a bad CRC.")
        if not chunks and chunk_type != b"IHDR":
            raise ValueError("The PNG does not start with an IHDR chunk.")
        chunks.append(Chunk(chunk_type, payload))
        offset = end
        if chunk_type == b"IEND":
            return chunks, data[offset:]


def _serialize(chunk: Chunk) -> bytes:
    crc = zlib.crc32(chunk.data, zlib.crc32(chunk.type))
    return struct.pack(">I4s", len(chunk.data), chunk.type) + chunk.data + struct.pack(">I", crc)
