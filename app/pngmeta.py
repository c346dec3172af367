"""Atelier's metadata about an image: what it says, and how it is written into a *copy*.

The stored original of every image is the provider's bytes, untouched (app.storage); the job
parameters that `flask atelier rebuild` needs live beside it in a JSON sidecar
(`Storage.write_sidecar`). This module owns:

- the metadata itself (`image_metadata` while a job is stored, `row_metadata` from the rows):
  one JSON object, version 1, the same in a sidecar and in a copy;
- *Download with prompt*: `embed_copy` returns a modified copy carrying it, without decoding or
  re-encoding a pixel: in a PNG one `iTXt` chunk with the keyword `atelier` right after IHDR; in a
  JPEG `COM` segments (each `atelier\\0` + a piece of the JSON) after the leading APPn segments; in
  a WebP an `XMP ` chunk (the prompt as dc:description, the JSON as atelier:metadata) in the
  extended format. `read_copy` reads any of them back. Changing the bytes breaks the data hash of
  the provider's Content Credentials: such a copy is labelled as modified wherever it is offered;
- libraries stored by earlier versions, whose PNGs carry the `atelier` chunk inside the stored
  file: `read` finds it (rebuild still understands it) and `strip` cuts it out. The chunk was
  spliced in whole, every other chunk copied byte for byte, so cutting it gives back the
  provider's bytes exactly (app.repair).

PNG layout: an 8-byte signature, then chunks of length (4 bytes, big-endian), type (4 bytes),
data (length bytes) and a CRC-32 of type + data (4 bytes), ending with IEND.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO
from xml.sax.saxutils import escape, unescape

if TYPE_CHECKING:
    from app.jobs import Claim
    from app.models import Image, Job
    from app.providers.base import ImageSlot

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"atelier"
MAX_CHUNK_LENGTH = 2**31 - 1  # the PNG specification's limit
VERSION = 1
JPEG_SOI = b"\xff\xd8"
JPEG_COM = 0xFE
JPEG_COM_PREFIX = KEYWORD + b"\x00"
# A JPEG segment's length field counts itself (2 bytes) and the payload: at most 65535.
JPEG_COM_PIECE = 65535 - 2 - len(JPEG_COM_PREFIX)
XMP_NAMESPACE = "urn:atelier:metadata:1"
VP8X_XMP_FLAG = 0x04
VP8X_ALPHA_FLAG = 0x10


@dataclass(frozen=True)
class Chunk:
    type: bytes
    data: bytes
    start: int = 0  # where the chunk's length field is in the file
    end: int = 0  # just past its CRC


# --- the metadata ---------------------------------------------------------------------------


def image_metadata(
    claim: Claim, slot: ImageSlot, inputs: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """What is kept about one stored image of a job being stored, enough to rebuild the library
    from files.

    An edit's output also names its inputs (`inputs`: (role, sha256) pairs, in order),
    whose files are content-addressed beside it, so `rebuild` can link them again."""
    return _metadata(claim, claim.job_id, slot.index, slot.revised_prompt, inputs)


def row_metadata(job: Job, image: Image) -> dict[str, Any]:
    """The same metadata as `image_metadata`, read from a stored image's rows."""
    inputs = [(item.role, item.sha256) for item in sorted(job.inputs, key=lambda i: i.position)]
    return _metadata(job, job.id, image.index, image.revised_prompt, inputs)


def _metadata(
    job: Claim | Job,
    job_id: int,
    index: int,
    revised_prompt: str | None,
    inputs: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The metadata of image `index` of `job` (a claim while it is stored, else its row)."""
    metadata = {
        "atelier": VERSION,
        "job_id": job_id,
        "index": index,
        "prompt": job.prompt,
        "revised_prompt": revised_prompt,
        **{name: getattr(job, name) for name in ("provider", "model", "size", "n")},
        "options": job.options or {},
        "created_at": job.created_at.isoformat().replace("+00:00", "Z"),
    }
    if inputs:
        metadata["kind"] = "edit"
        metadata["inputs"] = [{"role": role, "sha256": digest} for role, digest in inputs]
    return metadata


def dumps(metadata: dict[str, Any]) -> str:
    """The metadata as compact JSON with sorted keys (the same bytes for the same metadata)."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- copies with the metadata embedded ("Download with prompt") -----------------------------


def embed_copy(data: bytes, metadata: dict[str, Any]) -> bytes:
    """A copy of a stored PNG, JPEG or WebP with `metadata` embedded (no pixel decoded).

    ValueError for bytes that are none of these or are damaged."""
    if data.startswith(SIGNATURE):
        return embed(data, metadata)
    if data.startswith(JPEG_SOI):
        return _embed_jpeg(data, metadata)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _embed_webp(data, metadata)
    raise ValueError("Only a PNG, JPEG or WebP can carry Atelier's metadata.")


def read_copy(data: bytes) -> dict[str, Any] | None:
    """The metadata `embed_copy` wrote into a PNG, JPEG or WebP; None when there is none."""
    if data.startswith(SIGNATURE):
        return read(data)
    if data.startswith(JPEG_SOI):
        pieces = [
            payload[len(JPEG_COM_PREFIX) :]
            for marker, payload, _, _ in _jpeg_segments(data)
            if marker == JPEG_COM and payload.startswith(JPEG_COM_PREFIX)
        ]
        return _json_object(b"".join(pieces).decode("utf-8")) if pieces else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for fourcc, payload in _riff_chunks(data):
            if fourcc == b"XMP ":
                return _from_xmp(payload.decode("utf-8"))
        return None
    return None


def embed(data: bytes, metadata: dict[str, Any]) -> bytes:
    """Return the PNG with `metadata` in one `atelier` iTXt chunk right after IHDR.

    An existing `atelier` chunk is replaced, so embedding twice gives the same bytes as once.
    Bytes that are not a PNG come back unchanged; a damaged PNG raises ValueError.
    """
    if not data.startswith(SIGNATURE):
        return data
    chunks, trailer = _parse(data)
    header = b"".join(
        [
            KEYWORD + b"\x00",
            b"\x00\x00",  # compression flag and method: uncompressed
            b"\x00",  # empty language tag
            b"\x00",  # empty translated keyword
        ]
    )
    ours = Chunk(b"iTXt", header + dumps(metadata).encode("utf-8"))
    kept = [chunk for chunk in chunks if not _is_ours(chunk)]
    return SIGNATURE + b"".join(_serialize(c) for c in [kept[0], ours, *kept[1:]]) + trailer


def _embed_jpeg(data: bytes, metadata: dict[str, Any]) -> bytes:
    """COM segments after the leading APPn segments (JFIF's APP0 and EXIF's APP1 must stay
    first); a JSON longer than one segment holds is split over several, read back in order."""
    segments = _jpeg_segments(data)
    insert_at = len(JPEG_SOI)
    for marker, _, _, end in segments:
        if not 0xE0 <= marker <= 0xEF:
            break
        insert_at = end
    text = dumps(metadata).encode("utf-8")
    pieces = [text[at : at + JPEG_COM_PIECE] for at in range(0, len(text), JPEG_COM_PIECE)]
    out = [data[:insert_at]]
    for piece in pieces:
        length = 2 + len(JPEG_COM_PREFIX) + len(piece)
        out.append(b"\xff\xfe" + struct.pack(">H", length) + JPEG_COM_PREFIX + piece)
    # Earlier Atelier comments go: embedding twice gives the same bytes as once.
    at = insert_at
    for marker, payload, start, end in segments:
        if start >= insert_at and marker == JPEG_COM and payload.startswith(JPEG_COM_PREFIX):
            out.append(data[at:start])
            at = end
    out.append(data[at:])
    return b"".join(out)


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes, int, int]]:
    """(marker, payload, start, end) of each segment before the image data (SOS stops it)."""
    segments = []
    offset = len(JPEG_SOI)
    while True:
        if offset + 4 > len(data) or data[offset] != 0xFF:
            raise ValueError(f"The JPEG has no segment marker at byte {offset}.")
        marker = data[offset + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return segments
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        end = offset + 2 + length
        if length < 2 or end > len(data):
            raise ValueError(f"The JPEG segment at byte {offset} runs past the end of the file.")
        segments.append((marker, data[offset + 4 : end], offset, end))
        offset = end


def _embed_webp(data: bytes, metadata: dict[str, Any]) -> bytes:
    """An `XMP ` chunk at the end, in WebP's extended format (VP8X, made if the file is a
    simple one, with the XMP flag set)."""
    chunks = [(fourcc, payload) for fourcc, payload in _riff_chunks(data) if fourcc != b"XMP "]
    if not chunks:
        raise ValueError("The WebP holds no image.")
    if chunks[0][0] == b"VP8X":
        flags = chunks[0][1][0] | VP8X_XMP_FLAG
        chunks[0] = (b"VP8X", bytes([flags]) + chunks[0][1][1:])
    else:
        width, height, alpha = _webp_canvas(*chunks[0])
        flags = VP8X_XMP_FLAG | (VP8X_ALPHA_FLAG if alpha else 0)
        header = bytes([flags, 0, 0, 0]) + _u24(width - 1) + _u24(height - 1)
        chunks.insert(0, (b"VP8X", header))
    chunks.append((b"XMP ", _xmp(metadata).encode("utf-8")))
    body = b"WEBP" + b"".join(
        fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")
        for fourcc, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    (size,) = struct.unpack("<I", data[4:8])
    end = min(len(data), 8 + size)
    chunks, offset = [], 12
    while offset + 8 <= end:
        fourcc = data[offset : offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if offset + 8 + length > end:
            raise ValueError(f"The WebP chunk {fourcc!r} runs past the end of the file.")
        chunks.append((fourcc, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length + (length % 2)
    return chunks


def _webp_canvas(fourcc: bytes, payload: bytes) -> tuple[int, int, bool]:
    """Width, height and whether a simple WebP's one bitstream has alpha."""
    if fourcc == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        (bits,) = struct.unpack("<I", payload[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if fourcc == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    raise ValueError(f"The WebP's {fourcc!r} bitstream has no readable size.")


def _u24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def _xmp(metadata: dict[str, Any]) -> str:
    prompt = escape(str(metadata.get("prompt", "")))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'xmlns:atelier="{XMP_NAMESPACE}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{prompt}</rdf:li></rdf:Alt>'
        "</dc:description>"
        f"<atelier:metadata>{escape(dumps(metadata))}</atelier:metadata>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )


def _from_xmp(text: str) -> dict[str, Any] | None:
    start, end = text.find("<atelier:metadata>"), text.find("</atelier:metadata>")
    if start < 0 or end < start:
        return None
    return _json_object(unescape(text[start + len("<atelier:metadata>") : end]))


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("Atelier's metadata is not a JSON object.")
    return value


# --- PNGs stored by earlier versions ---------------------------------------------------------


def read(data: bytes) -> dict[str, Any] | None:
    """The metadata in a PNG's `atelier` chunk, or None for other bytes or a PNG without it.

    Raises ValueError for a damaged PNG or an `atelier` chunk that does not hold a JSON object.
    """
    if not data.startswith(SIGNATURE):
        return None
    chunks, _ = _parse(data)
    for chunk in chunks:
        if _is_ours(chunk):
            return _json_object(_itxt_text(chunk.data))
    return None


def file_carries_metadata(handle: BinaryIO) -> bool:
    """Whether the PNG open in `handle` has an `atelier` chunk before its image data: only the
    chunk headers are read (earlier versions put the chunk right after IHDR). False for a file
    that is not a PNG or is cut short."""
    if handle.read(len(SIGNATURE)) != SIGNATURE:
        return False
    while len(header := handle.read(8)) == 8:
        length, chunk_type = struct.unpack(">I4s", header)
        if chunk_type in (b"IDAT", b"IEND"):
            return False
        payload_at = handle.tell()
        if chunk_type == b"iTXt" and handle.read(len(KEYWORD) + 1) == KEYWORD + b"\x00":
            return True
        handle.seek(payload_at + length + 4)  # past the payload and its CRC
    return False


def strip(data: bytes) -> bytes | None:
    """The PNG without its `atelier` chunks, every other byte where it was; None when it has
    none (or is not a PNG). ValueError for a damaged PNG."""
    if not data.startswith(SIGNATURE):
        return None
    chunks, _ = _parse(data)
    ours = [chunk for chunk in chunks if _is_ours(chunk)]
    if not ours:
        return None
    kept, at = [], 0
    for chunk in ours:
        kept.append(data[at : chunk.start])
        at = chunk.end
    kept.append(data[at:])
    return b"".join(kept)


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
        chunks.append(Chunk(chunk_type, payload, offset, end))
        offset = end
        if chunk_type == b"IEND":
            return chunks, data[offset:]


def _serialize(chunk: Chunk) -> bytes:
    crc = zlib.crc32(chunk.data, zlib.crc32(chunk.type))
    return struct.pack(">I4s", len(chunk.data), chunk.type) + chunk.data + struct.pack(">I", crc)
