"""Report text: sections, sentences, and negated/uncertain phrases on real CT-RATE report sentences."""

from __future__ import annotations

import csv

import pytest

from freetumor_core.reports import phrases_of, split_report, split_sentences


def polarities(sentence: str) -> list[tuple[str, str]]:
    return [(phrase.polarity, phrase.text) for phrase in phrases_of(sentence)]


@pytest.mark.parametrize(
    "sentence",
    [
        "Pericardial effusion-thickening was not observed.",
        "Pleural effusion-thickening was not detected in both hemithorax.",
        "No pathological LAP was detected in the mediastinum.",
        "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral hilar-axillary "
        "pathological dimensions were detected.",
        "Pleural effusion - pneumothorax was not detected.",
        "No lytic or destructive lesions were detected in bone structures.",
        "When examined in the lung parenchyma window; no nodular or infiltrative lesion is detected.",
        "There is no pleural effusion.",
        "Without pleural effusion.",
    ],
)
def test_negated_sentences_of_real_reports_are_wholly_negated(sentence):
    found = polarities(sentence)
    assert [polarity for polarity, _ in found] == ["negated"], found


@pytest.mark.parametrize(
    ("sentence", "affirmed", "negated"),
    [
        (
            "Thoracic esophagus calibration was normal and no significant pathological wall thickening "
            "was detected.",
            "Thoracic esophagus calibration was normal",
            "no significant pathological wall thickening was detected",
        ),
        (
            "Bilateral adrenal glands were normal and no space-occupying lesion was detected.",
            "Bilateral adrenal glands were normal",
            "no space-occupying lesion was detected",
        ),
        (
            "Heart size increased and pericardial effusion was not observed.",
            "Heart size increased",
            "pericardial effusion was not observed",
        ),
        (
            "A 5 mm nodule in the right upper lobe, but no pleural effusion.",
            "A 5 mm nodule in the right upper lobe",
            "no pleural effusion",
        ),
    ],
)
def test_the_scope_of_a_negation_ends_at_a_new_clause(sentence, affirmed, negated):
    found = polarities(sentence)
    assert ("affirmed", affirmed) in found, found
    assert ("negated", negated) in found, found


@pytest.mark.parametrize(
    "sentence",
    [
        "Calcified atherosclerotic changes were observed in the thoracic aorta and coronary artery wall.",
        "Pleural effusion measuring 14 mm in thickness on the right and 8 mm on the left and linear "
        "atelectatic changes in the adjacent lung parenchyma were observed.",
        "Mild emphysematous changes were observed in both lungs.",
        "The nodule in the right lower lobe showed no significant change in size.",
        "Pleural effusion and atelectasis decreased.",
    ],
)
def test_positive_findings_stay_affirmed(sentence):
    assert {polarity for polarity, _ in polarities(sentence)} == {"affirmed"}, polarities(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "Mosaic attenuation pattern in both lungs (small airway disease?, small vessel disease?).",
        "A hypodense nodular lesion was observed in segment 7 of the liver (lipoma?).",
        "Lymphoma cannot be excluded.",
        "Findings suspicious for early pneumonia.",
    ],
)
def test_uncertain_findings_are_marked_uncertain(sentence):
    found = polarities(sentence)
    assert "uncertain" in {polarity for polarity, _ in found}, found
    assert "negated" not in {polarity for polarity, _ in found}, found


def test_a_mosaic_pattern_with_a_question_keeps_the_finding_affirmed():
    found = polarities("A mosaic attenuation pattern was observed in both lungs (small airway disease?).")
    assert found[0] == ("affirmed", "A mosaic attenuation pattern was observed in both lungs")
    assert found[-1][0] == "uncertain"


def test_sentences_do_not_split_in_decimals_or_abbreviations():
    text = "A nodule of 1.5 cm, e.g. a granuloma. Heart size is normal.\n\n2. Emphysema"
    assert split_sentences(text) == [
        "A nodule of 1.5 cm, e.g. a granuloma.",
        "Heart size is normal.",
        "Emphysema",
    ]


def test_ct_rate_impression_follows_the_first_double_quote():
    report = split_report(
        'Heart size increased. Pericardial effusion was not observed. " Cardiomegaly. " Emphysema'
    )
    assert [(s.section, s.text) for s in report] == [
        ("findings", "Heart size increased."),
        ("findings", "Pericardial effusion was not observed."),
        ("impression", "Cardiomegaly."),
        ("impression", "Emphysema"),
    ]
    assert report[1].negated and not report[0].negated


def test_an_impression_heading_starts_the_impression():
    report = split_report("FINDINGS: No pleural effusion. IMPRESSION: Normal chest CT.")
    assert [(s.section, s.text) for s in report] == [
        ("findings", "No pleural effusion."),
        ("impression", "Normal chest CT."),
    ]


def test_empty_and_odd_reports():
    assert split_report("") == []
    assert split_report("   \n ") == []
    assert [s.text for s in split_report("no pleural effusion")] == ["no pleural effusion"]


def test_on_the_real_reports_negated_effusion_never_counts_as_effusion(shared_data):
    """In every real report whose label says no pleural effusion, each phrase that names a pleural
    effusion is negated (or uncertain); in most positive reports one is affirmed."""
    rows = list(csv.DictReader(open(shared_data / "ctrate_reports" / "val.csv", encoding="utf-8")))
    affirmed_in_negatives, affirmed_in_positives = 0, 0
    for row in rows:
        phrases = [p for s in split_report(row["report_text"]) for p in s.phrases]
        naming = [p for p in phrases if "pleural effusion" in p.text.lower()]
        affirmed = any(p.polarity == "affirmed" for p in naming)
        if row["Pleural effusion"] == "1":
            affirmed_in_positives += affirmed
        else:
            affirmed_in_negatives += affirmed
    positives = sum(row["Pleural effusion"] == "1" for row in rows)
    assert affirmed_in_negatives <= 2, affirmed_in_negatives
    assert affirmed_in_positives >= 0.8 * positives, (affirmed_in_positives, positives)
