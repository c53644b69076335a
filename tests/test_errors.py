"""The advice that only a rebuild repairs an index is worded in one place (errors.py)."""

from __future__ import annotations

from pathlib import Path

import simsearch
from simsearch.errors import REBUILD_HINT, IndexFormatError, rebuild_hint


def test_rebuild_messages_keep_their_wording():
    assert REBUILD_HINT == "rebuild with `simsearch index --rebuild`"
    assert rebuild_hint("FOLDER") == "rebuild with `simsearch index FOLDER --rebuild`"
    p = Path("idx/gen-1/ids.npy")
    assert str(IndexFormatError.missing(p)) == "idx/gen-1/ids.npy: missing; rebuild with `simsearch index --rebuild`"
    assert str(IndexFormatError.corrupt(p, "hash mismatch")) == (
        "idx/gen-1/ids.npy: corrupt (hash mismatch); rebuild with `simsearch index --rebuild`"
    )
    assert str(IndexFormatError.rebuild(p, "index format 0 is too old to migrate")) == (
        "idx/gen-1/ids.npy: index format 0 is too old to migrate; rebuild with `simsearch index --rebuild`"
    )


def test_no_module_spells_the_rebuild_hint_itself():
    pkg = Path(simsearch.__file__).parent
    spelled = [p.name for p in pkg.glob("*.py") if p.name != "errors.py" and "rebuild with `" in p.read_text()]
    assert spelled == []


def test_printable_shows_bytes_that_are_not_utf8_as_escapes():
    import os

    from simsearch.errors import printable

    assert printable(os.fsdecode(b"caf\xe9 \xff.png")) == "caf\\xe9 \\xff.png"
    assert printable("café 写真.png") == "café 写真.png"
    assert printable("odd \ud800") == "odd \\ud800"  # a surrogate that stands for no byte
