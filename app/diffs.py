"""Word-level differences between two prompts, for showing how a prompt changed.

`word_diff(old, new)` returns pieces `(op, text)` with op "equal", "delete" or "insert"; joining
the "equal" and "insert" texts gives `new`, the "equal" and "delete" texts give `old` (up to
spacing). Words and punctuation marks are compared, not spaces, so re-spacing a prompt is not
shown as a change; each token keeps the whitespace that follows it, so the pieces read
naturally when rendered.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Literal

Op = Literal["equal", "delete", "insert"]
Piece = tuple[Op, str]

# A word or a single punctuation mark, with the whitespace after it; or leading whitespace.
TOKEN = re.compile(r"\w+\s*|[^\w\s]\s*|\s+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def word_diff(old: str, new: str) -> list[Piece]:
    """The pieces that turn `old` into `new`, word by word (a replacement is a delete then an
    insert). Identical texts give one "equal" piece; two empty texts give no pieces."""
    old_tokens, new_tokens = tokens(old or ""), tokens(new or "")
    matcher = SequenceMatcher(
        None, [t.strip() for t in old_tokens], [t.strip() for t in new_tokens], autojunk=False
    )
    pieces: list[Piece] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            # Same words; the new text's spacing is the one shown.
            _append(pieces, "equal", "".join(new_tokens[j1:j2]))
            continue
        if tag in ("delete", "replace"):
            _append(pieces, "delete", "".join(old_tokens[i1:i2]))
        if tag in ("insert", "replace"):
            _append(pieces, "insert", "".join(new_tokens[j1:j2]))
    return pieces


def _append(pieces: list[Piece], op: Op, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == op:
        pieces[-1] = (op, pieces[-1][1] + text)
    else:
        pieces.append((op, text))


def has_changes(pieces: list[Piece]) -> bool:
    return any(op != "equal" for op, _ in pieces)
