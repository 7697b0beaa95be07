"""A reader study on disk, and the Python API that the command line and the viewers share.

A study folder holds::

    study.json          manifest: study id, case conventions, per-case display (window, box)
    study.db            SQLite store: cases, readers and their orders, views, answers
    cases/<id>.nii      one CT crop per case (int16 HU, identical header and size for all)

Nothing in the folder says which case is real: that is only in the key file, kept elsewhere. The
study id, case ids, the order of cases and each reader's order come from the operating system's
secret random source (:mod:`secrets`), never from the study seed, which only the key records: the
folder holds nothing from which an order or an id could be replayed.

Example::

    study = Study.open("study")
    for case_id in study.cases("alice"):
        view = study.case_image(case_id, reader="alice")   # CT + window + box; starts the clock
        study.answer("alice", case_id, "synthetic", confidence=4, comment="too smooth")
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..volume import Volume, read_volume
from .cases import CaseFormat
from .store import CALLS, Answer, Store, parse_time, utc_now

MANIFEST = "study.json"
DATABASE = "study.db"
CASES_FOLDER = "cases"
FORMAT_NAME = "freetumor-visual-turing-test"
FORMAT_VERSION = 2
READER_NAME = re.compile(r"[\w][\w .@-]{0,63}")
MAX_COMMENT_CHARS = 4000


@dataclass
class CaseView:
    """What a reader is shown: the CT, how to window it, and the region to judge.

    Attributes:
        case_id: the neutral id.
        path: the case file.
        volume: the CT crop (int16 HU, identity direction, origin 0).
        window: ``{"name", "level_hu", "width_hu"}``.
        box_mm: ``{"low": [x, y, z], "high": [x, y, z]}`` in the volume's physical frame (mm).
        shown_at: when this reader first saw the case (UTC ISO 8601), or ``None``.
    """

    case_id: str
    path: Path
    volume: Volume
    window: dict[str, Any]
    box_mm: dict[str, list[float]]
    shown_at: str | None = None


def check_reader(reader: Any) -> str:
    """A reader name: 1-64 characters, letters, digits, space, ``_ . @ -``.

    Raises:
        InputError: anything else.
    """
    if not isinstance(reader, str) or not READER_NAME.fullmatch(reader.strip()) or reader != reader.strip():
        raise InputError(
            f"reader name must be 1-64 letters, digits, spaces or _ . @ - (starting with a letter or "
            f"digit), got {reader!r}"
        )
    return reader


class Study:
    """An open study folder. Create one with :func:`freetumor_core.turing.build.build_study`."""

    def __init__(self, folder: Path, manifest: dict[str, Any], store: Store) -> None:
        self.folder = folder
        self.manifest = manifest
        self.store = store
        self.case_format = CaseFormat.from_dict(manifest["case_format"])

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> Study:
        """Open and check a study folder.

        Raises:
            InputError: the folder, manifest, database or a case file is missing or invalid, or the
                manifest and database disagree (the message names the file).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("study folder not found", folder)
        manifest_path = folder / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise InputError(f"not a study folder: no {MANIFEST}", folder) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"study manifest is not valid JSON: {error}", manifest_path) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise InputError(f"not a study manifest (format is not '{FORMAT_NAME}')", manifest_path)
        if manifest.get("version") != FORMAT_VERSION:
            raise InputError(
                f"study format version {manifest.get('version')} is not the supported {FORMAT_VERSION}",
                manifest_path,
            )
        try:
            cases = manifest["cases"]
            CaseFormat.from_dict(manifest["case_format"])
            if not isinstance(manifest["study_id"], str):
                raise ValueError("study_id must be text")
            for case in cases.values():
                if not isinstance(case["file"], str) or len(case["box_mm"]["low"]) != 3:
                    raise ValueError("each case needs a file and a box")
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise InputError(
                f"study manifest is incomplete or malformed ({error!r})", manifest_path
            ) from None
        store = Store(folder / DATABASE)
        meta = store.check()
        if meta.get("study_id") != manifest["study_id"]:
            raise InputError(
                f"database belongs to study {meta.get('study_id')}, the manifest to {manifest['study_id']}",
                store.path,
            )
        if sorted(cases) != store.case_ids():
            raise InputError("the manifest's cases and the database's cases differ", store.path)
        for case_id, case in cases.items():
            if not (folder / case["file"]).is_file():
                raise InputError(f"case file of {case_id} is missing", folder / case["file"])
        return cls(folder, manifest, store)

    # -- cases ----------------------------------------------------------------------------------
    @property
    def study_id(self) -> str:
        return str(self.manifest["study_id"])

    @property
    def case_ids(self) -> list[str]:
        """All case ids, sorted."""
        return sorted(self.manifest["cases"])

    def _check_case(self, case_id: Any) -> str:
        if not isinstance(case_id, str) or case_id not in self.manifest["cases"]:
            raise InputError(f"no case '{case_id}' in this study", self.folder / MANIFEST)
        return case_id

    def order(self, reader: str) -> list[str]:
        """All cases in ``reader``'s own order (drawn from a secret random source; saved)."""
        return self.store.order(check_reader(reader))

    def cases(self, reader: str) -> list[str]:
        """The cases ``reader`` has not answered yet, in the reader's order."""
        order = self.order(reader)
        done = self.store.answered(reader)
        return [case_id for case_id in order if case_id not in done]

    def case_image(self, case_id: str, reader: str | None = None) -> CaseView:
        """The CT crop of a case with its window preset and judged box; never the label.

        With ``reader``, the first call also records when the case was shown, which becomes the
        answer's start time.

        Raises:
            InputError: unknown case, unreadable case file, or a bad reader name.
        """
        case = self.manifest["cases"][self._check_case(case_id)]
        shown_at = None
        if reader is not None:
            self.order(reader)
            shown_at = self.store.record_view(reader, case_id)
        path = self.folder / case["file"]
        return CaseView(
            case_id, path, read_volume(path), dict(self.case_format.window), case["box_mm"], shown_at
        )

    # -- answers --------------------------------------------------------------------------------
    def answer(
        self,
        reader: str,
        case_id: str,
        call: str,
        confidence: int,
        comment: str = "",
        started_at: str | None = None,
    ) -> Answer:
        """Submit one answer; it is on disk when this returns, and locked.

        Args:
            reader: the reader's name.
            case_id: a case of this study.
            call: ``"real"`` or ``"synthetic"``.
            confidence: 1 (guess) to 5 (certain).
            comment: free text (optional).
            started_at: when the reader started on the case (ISO 8601); default: when the case was
                first shown to this reader through :meth:`case_image`, if it was.

        Raises:
            AnswerLocked: the reader already answered this case (exit code 2 on the command line).
            InputError: a bad reader name, case, call, confidence, comment or time.
        """
        check_reader(reader)
        self._check_case(case_id)
        if call not in CALLS:
            raise InputError(f"call must be 'real' or 'synthetic', got {call!r}")
        if isinstance(confidence, bool) or not isinstance(confidence, int) or not 1 <= confidence <= 5:
            raise InputError(f"confidence must be an integer from 1 to 5, got {confidence!r}")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
            raise InputError(f"comment must be text of at most {MAX_COMMENT_CHARS} characters")
        if started_at is not None:
            start = parse_time(started_at, "start time")
            if start > parse_time(utc_now()):
                raise InputError(f"start time {started_at} is in the future")
            started_at = start.isoformat(timespec="microseconds")
        self.order(reader)
        return self.store.submit(reader, case_id, call, confidence, comment, started_at)

    def answers(self, reader: str | None = None) -> list[Answer]:
        """Submitted answers, of one reader or of all, in submission order."""
        return self.store.answers(reader)

    def readers(self) -> list[str]:
        return self.store.readers()

    def info(self) -> dict[str, Any]:
        """Counts for a summary: cases, and per reader the answered and remaining cases."""
        total = len(self.case_ids)
        progress = {}
        for reader in self.readers():
            done = len(self.store.answered(reader))
            progress[reader] = {"answered": done, "remaining": total - done}
        return {
            "study": str(self.folder),
            "study_id": self.study_id,
            "cases": total,
            "readers": progress,
            "window": dict(self.case_format.window),
            "spacing_mm": list(self.case_format.spacing_mm),
            "size_voxels": list(self.case_format.size_voxels),
        }
