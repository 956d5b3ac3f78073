"""``container_file_citation`` annotations: which span of the answer names each file the code produced.

Models write ``[chart](sandbox:/mnt/data/chart.png)``, a bare ``/mnt/data/chart.png`` or just ``chart.png``; the
citation covers the link, else the path, else the name. A file the text never names is still cited, at 0..0, as
OpenAI does, so clients can offer every generated file for download.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Cited:
    file_id: str
    path: str  # /mnt/data/...
    start: int
    end: int

    @property
    def filename(self) -> str:
        return PurePosixPath(self.path).name


def _span(text: str, path: str) -> tuple[int, int]:
    quoted = re.escape(path)
    relative = re.escape(path.removeprefix("/mnt/data/"))
    end = r"(?![\w-])(?!\.\w)"  # the name ends here, though a sentence's full stop may follow
    patterns = (
        rf"!?\[[^\]\n]*\]\(\s*(?:sandbox:)?{quoted}\s*\)",  # a markdown link (or image) to the file
        rf"(?:sandbox:)?{quoted}{end}",
        rf"(?<![\w/.-]){relative}{end}",
    )
    for pattern in patterns:
        if found := re.search(pattern, text):
            return found.start(), found.end()
    return 0, 0


def cite(text: str, files: Iterable[tuple[str, str]]) -> list[Cited]:
    """Citations for ``(file_id, path)`` pairs, in the order they appear in the text (unmentioned ones first)."""
    cited = [Cited(fid, path, *_span(text, path)) for fid, path in files]
    return sorted(cited, key=lambda c: c.start)
