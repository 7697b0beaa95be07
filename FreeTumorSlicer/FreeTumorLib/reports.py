"""The Reports panel's jobs: match a CT node against an index of reports, search an index of CTs.

Match: the CT node is written as NRRD to a temporary folder and ``freetumor reports match CT
--index DIR -k K --json-file match.json`` runs in a subprocess; its results (rank, score, report id
and text, matched sentences) come back as :class:`ReportMatch` rows and as a table node
``<CT> report matches``. Search: ``freetumor reports search TEXT --index DIR`` returns the indexed
CTs that best match a finding (:class:`CtHit`); :func:`load_hit` loads the chosen one as a volume node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freetumor_core.volume import read_ct, write_volume

from . import nodes
from .runner import NodeJob

DEVICES = ("auto", "cpu", "cuda")
MAX_RESULTS = 100


@dataclass(frozen=True)
class ReportsRequest:
    """Where to look and how many results: the index folder, ``k``, an optional model folder (default:
    the one the index names) and the device.

    Raises:
        ValueError: no index folder, ``k`` out of 1-100, or an unknown device.
    """

    index: str
    k: int = 5
    model: str = ""
    device: str = "auto"

    def __post_init__(self) -> None:
        if not str(self.index or "").strip() or str(self.index).strip() == ".":
            raise ValueError("choose an index folder")
        if not 1 <= int(self.k) <= MAX_RESULTS:
            raise ValueError(f"the number of results must be from 1 to {MAX_RESULTS}, not {self.k}")
        device = str(self.device).strip()
        if device not in DEVICES and not device.startswith("cuda:"):
            raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, not '{device}'")
        object.__setattr__(self, "index", str(self.index).strip())
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "model", str(self.model or "").strip())
        object.__setattr__(self, "device", device)

    def common(self) -> list[str]:
        arguments = ["--index", self.index, "-k", str(self.k), "--device", self.device]
        if self.model and self.model != ".":
            arguments += ["--model", self.model]
        return arguments


@dataclass(frozen=True)
class ReportMatch:
    """One matched report: rank, score, id, text and its best-matching sentences ``(text, score)``."""

    rank: int
    score: float
    id: str
    text: str
    sentences: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class CtHit:
    """One CT found by a search: rank, score, id and its file."""

    rank: int
    score: float
    id: str
    path: str


@dataclass
class MatchOutputs:
    """What a finished match added: the table node, and the rows."""

    table: Any
    matches: list[ReportMatch] = field(default_factory=list)


def read_matches(path: Path) -> list[ReportMatch]:
    """The results of ``reports match --json-file``.

    Raises:
        ValueError: the file is missing or not in that shape.
    """
    try:
        payload = json.loads(Path(path).read_text())
        return [
            ReportMatch(
                int(item["rank"]),
                float(item["score"]),
                str(item["id"]),
                str(item["text"]),
                tuple((str(s["text"]), float(s["score"])) for s in item["matched_sentences"]),
            )
            for item in payload["results"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the matches: {error}") from None


def read_hits(path: Path) -> list[CtHit]:
    """The results of ``reports search --json-file``.

    Raises:
        ValueError: the file is missing or not in that shape.
    """
    try:
        payload = json.loads(Path(path).read_text())
        return [
            CtHit(int(item["rank"]), float(item["score"]), str(item["id"]), str(item["path"]))
            for item in payload["results"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the search results: {error}") from None


def add_match_table(scene, matches: list[ReportMatch], name: str):
    """A table node: rank, score, report id, matched sentences (joined by " | ")."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in ("rank", "score", "report", "matched sentences"):
        table.AddColumn().SetName(column)
    for match in matches:
        row = table.AddEmptyRow()
        sentences = " | ".join(text for text, _ in match.sentences)
        for column, value in enumerate((str(match.rank), f"{match.score:.3f}", match.id, sentences)):
            table.SetCellText(row, column, value)
    return table


def load_hit(scene, hit: CtHit):
    """Load a search result's CT into ``scene`` as a volume node named by its id."""
    return nodes.add_volume_node(scene, read_ct(hit.path), hit.id)


class MatchJob(NodeJob):
    """Match the CT of ``input_node`` against an index of reports in a background process; on success
    a table node is added and ``on_done(MatchOutputs)`` called."""

    prefix = "freetumor-match-"

    def __init__(
        self,
        input_node,
        request: ReportsRequest,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[MatchOutputs], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        python: str | None = None,
        keep_folder: bool = False,
    ) -> None:
        if input_node is None:
            raise ValueError("choose a CT volume")
        super().__init__(input_node, None, request, on_progress, on_done, on_error, python, keep_folder)

    def _arguments(self, folder: Path) -> list[str]:
        ct_path = write_volume(nodes.volume_from_node(self.input_node), folder / "input_ct.nrrd")
        (folder / "output").mkdir()
        result = folder / "output" / "match.json"
        return ["reports", "match", str(ct_path), *self.request.common(), "--json-file", str(result)]

    def _load(self, output: Path) -> MatchOutputs:
        matches = read_matches(output / "match.json")
        name = f"{self.input_node.GetName()} report matches"
        return MatchOutputs(add_match_table(self.input_node.GetScene(), matches, name), matches)


class SearchJob(NodeJob):
    """Search an index of CTs for a finding's text in a background process; ``on_done(list[CtHit])``."""

    prefix = "freetumor-search-"

    def __init__(
        self,
        text: str,
        request: ReportsRequest,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_done: Callable[[list[CtHit]], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        python: str | None = None,
        keep_folder: bool = False,
    ) -> None:
        if not str(text or "").strip():
            raise ValueError("type a finding to search for")
        self.text = str(text).strip()
        super().__init__(None, None, request, on_progress, on_done, on_error, python, keep_folder)

    def _arguments(self, folder: Path) -> list[str]:
        (folder / "output").mkdir()
        result = folder / "output" / "search.json"
        return ["reports", "search", self.text, *self.request.common(), "--json-file", str(result)]

    def _load(self, output: Path) -> list[CtHit]:
        return read_hits(output / "search.json")


__all__ = [
    "DEVICES",
    "CtHit",
    "MatchJob",
    "MatchOutputs",
    "ReportMatch",
    "ReportsRequest",
    "SearchJob",
    "add_match_table",
    "load_hit",
    "read_hits",
    "read_matches",
]
