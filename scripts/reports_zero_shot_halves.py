"""How well the choice of prompt phrasings generalises: zero-shot text scoring on split halves.

The negation-aware scoring of ``freetumor reports zero-shot-text`` gives nine abnormalities extra
phrasings (``freetumor_core.reports.PROMPTS``), chosen on all the CT-RATE validation reports. This
script offers phrasings for all 18 (``CANDIDATES``), makes the choice (names only, or name and
phrasings) per abnormality on one half of the reports (alternate rows), and scores the other half.
The uncertain-phrase penalty (``zeroshot.UNCERTAIN_PENALTY``) stays as shipped.

    python scripts/reports_zero_shot_halves.py ../shared/data/ctrate_reports/val.csv
"""

from __future__ import annotations

import argparse

import numpy as np

from freetumor_core.reports import load_encoder, read_report_table, split_report, zeroshot
from freetumor_core.reports.zeroshot import _auc, report_scores

CANDIDATES: dict[str, tuple[str, ...]] = {
    **zeroshot.PROMPTS,
    "Cardiomegaly": ("heart size increased", "enlarged heart"),
    "Pericardial effusion": ("fluid in the pericardium",),
    "Hiatal hernia": ("hiatus hernia",),
    "Lung nodule": ("pulmonary nodule", "nodule in the lung parenchyma"),
    "Pleural effusion": ("fluid in the pleural space",),
    "Peribronchial thickening": ("bronchial wall thickening",),
    "Bronchiectasis": ("dilated bronchi",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="CT-RATE-style CSV")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    table = read_report_table(args.table)
    encoder = load_encoder(device=args.device)
    reports = [split_report(text) for text in table.texts]
    names = list(table.labels)
    shipped = dict(zeroshot.PROMPTS)
    try:
        zeroshot.PROMPTS.clear()
        names_only = report_scores(reports, names, encoder)
        zeroshot.PROMPTS.update(CANDIDATES)
        phrasings = report_scores(reports, names, encoder)
    finally:
        zeroshot.PROMPTS.clear()
        zeroshot.PROMPTS.update(shipped)
    rows = np.arange(len(reports))
    for tune in (0, 1):
        chosen_on, scored_on = rows % 2 == tune, rows % 2 != tune
        plain, negation, below, picked = [], [], [], []
        for name in names:
            labels = table.labels[name]

            def auc(scores, where, labels=labels):
                return _auc(scores[where], labels[where])

            use = (
                phrasings
                if auc(phrasings[name]["negation"], chosen_on) > auc(names_only[name]["negation"], chosen_on)
                else names_only
            )
            if use is phrasings:
                picked.append(name)
            plain.append(auc(names_only[name]["plain"], scored_on))
            negation.append(auc(use[name]["negation"], scored_on))
            if negation[-1] < plain[-1]:
                below.append(f"{name} {plain[-1]:.3f} -> {negation[-1]:.3f}")
        half = "even" if tune == 0 else "odd"
        print(
            f"chosen on {half} rows, scored on the others: mean AUC plain {np.mean(plain):.3f}, "
            f"negation {np.mean(negation):.3f}"
        )
        print(f"  phrasings for: {', '.join(picked)}")
        print(f"  below plain: {'; '.join(below) or 'none'}")


if __name__ == "__main__":
    main()
