"""Blinding: nothing in a study folder lets anyone rebuild its case ids, its order or a reader's order.

The attack: replay the stored seed (and every small seed) through the way ids and orders used to be
drawn (``default_rng(seed)``: study id, shuffle, ids; SHA-256 of seed and reader name for reader
orders) and compare with every stored field.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import stat
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_leak_check import deeplesion_datalists

from freetumor_core.turing.build import real_cases, synthetic_cases, write_study
from freetumor_core.turing.cases import CaseFormat
from freetumor_core.turing.datalist import read_datalist
from freetumor_core.turing.study import Study

SMALL_SEEDS = range(0, 2000)


def _seeded_draw(seed: int, count: int) -> tuple[str, list[int], list[str]]:
    """Study id, shuffle and ids as a seeded build would draw them."""
    rng = np.random.default_rng(seed)
    study_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    shuffle = rng.permutation(count).tolist()
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"case-{int(rng.integers(0, 1 << 24)):06x}")
    return study_id, shuffle, sorted(ids)


def _seeded_reader_order(case_ids: list[str], seed: int, reader: str) -> list[str]:
    digest = hashlib.sha256(f"{seed}:{reader}".encode()).digest()
    order = sorted(case_ids)
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


@pytest.fixture(scope="module")
def studies(shared_data: Path, tmp_path_factory) -> list[tuple[Path, Path]]:
    """Three studies from the same 4 real DeepLesion lesions and 4 synthetic tumors, all seed 0."""
    folder = tmp_path_factory.mktemp("blinding")
    real_list, host_list = deeplesion_datalists(shared_data, folder)
    case_format = CaseFormat()
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = real_cases(read_datalist(real_list), None, rng, case_format)
        cases = real + synthetic_cases(read_datalist(host_list), 4, real, 0, rng, case_format)
    built = []
    for index in range(3):
        study, key = folder / f"study{index}", folder / f"key{index}.json"
        write_study(study, key, cases, seed=0, case_format=case_format, allow_leaky=True)
        built.append((study, key))
    return built


def _stored_fields(study_folder: Path) -> dict[str, object]:
    manifest = json.loads((study_folder / "study.json").read_text())
    database = sqlite3.connect(study_folder / "study.db")
    meta = {key: json.loads(value) for key, value in database.execute("SELECT key, value FROM meta")}
    db_cases = [row[0] for row in database.execute("SELECT case_id FROM cases ORDER BY rowid")]
    database.close()
    return {
        "manifest": manifest,
        "meta": meta,
        "db_cases": db_cases,
        "files": sorted(p.name for p in (study_folder / "cases").iterdir()),
    }


def test_no_stored_field_replays(studies: list[tuple[Path, Path]]) -> None:
    study_folder, key_path = studies[0]
    key = json.loads(key_path.read_text())
    fields = _stored_fields(study_folder)
    manifest, meta = fields["manifest"], fields["meta"]
    # The seed is only in the key.
    assert key["seed"] == 0
    assert "seed" not in manifest and "seed" not in meta
    assert "seed" not in json.dumps(manifest) and "seed" not in json.dumps(meta)
    case_ids = sorted(manifest["cases"])
    count = len(case_ids)
    # Everything in the folder lists the cases in id order, which says nothing by itself.
    assert list(manifest["cases"]) == case_ids and fields["db_cases"] == case_ids
    assert fields["files"] == [f"{case_id}.nii" for case_id in case_ids]
    origins = [key["cases"][case_id]["origin"] for case_id in case_ids]

    study = Study.open(study_folder)
    orders = {reader: study.order(reader) for reader in ("alice", "bob")}
    # The cases as the build received them: real first.
    given = sorted(origins)
    pattern_hits = 0
    for seed in [key["seed"], *SMALL_SEEDS]:
        study_id, shuffle, ids = _seeded_draw(seed, count)
        pattern_hits += [given[i] for i in shuffle] == origins
        assert study_id != manifest["study_id"] and study_id != meta["study_id"]
        # A chance hit on one 24-bit id is possible over 2000 seeds; a replay would hit all of them.
        assert len(set(ids) & set(case_ids)) <= 1
        assert not all(_seeded_reader_order(case_ids, seed, r) == orders[r] for r in orders)
    # Origin by id order is matched by chance only (1 in 70 patterns of 4 + 4): about 29 of 2001 seeds.
    assert pattern_hits < 90
    # The reader orders are saved: a fresh process sees the same ones.
    assert {r: Study.open(study_folder).order(r) for r in orders} == orders
    assert sorted(origins) == ["real"] * 4 + ["synthetic"] * 4


def test_same_seed_builds_get_unrelated_ids_and_orders(studies: list[tuple[Path, Path]]) -> None:
    keys = [json.loads(key.read_text()) for _, key in studies]
    id_sets = [set(key["cases"]) for key in keys]
    assert len({key["study_id"] for key in keys}) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not id_sets[i] & id_sets[j]
    # Origin by position (id order): random per build. Three equal patterns would happen 1 in 4900.
    patterns = [tuple(key["cases"][c]["origin"] for c in sorted(key["cases"])) for key in keys]
    assert len(set(patterns)) > 1
    # Which lesions and hosts were used stays seeded: the same in every build.
    drawn = [sorted((e["origin"], e["source"], e["organ"]) for e in key["cases"].values()) for key in keys]
    assert drawn[0] == drawn[1] == drawn[2]
    # Crops and the judged boxes are drawn afresh too: no two builds share a box.
    boxes = [
        {
            json.dumps(case["box_mm"])
            for case in json.loads((study / "study.json").read_text())["cases"].values()
        }
        for study, _ in studies
    ]
    assert not boxes[0] & boxes[1]


def test_key_file_is_private(studies: list[tuple[Path, Path]]) -> None:
    for study_folder, key_path in studies:
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert key_path.parent != study_folder
        assert not any(p.name.startswith(".") for p in study_folder.rglob("*"))
