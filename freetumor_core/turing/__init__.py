"""Visual Turing Test: blinded reader studies of real versus synthetic tumors.

- :func:`build_study` makes a study folder (cases only) and a separate key file;
- :class:`Study` is what readers and viewers use: ``cases(reader)``, ``case_image(case)``,
  ``answer(...)``; answers go to a crash-safe SQLite store and are locked once submitted;
- :func:`score` (with :func:`read_key`) computes sensitivity, specificity, accuracy, Wilson
  intervals and Fleiss' kappa.
"""

from .build import build_study
from .cases import CaseFormat
from .scoring import read_key, score
from .store import Answer, AnswerLocked
from .study import CaseView, Study

__all__ = ["Answer", "AnswerLocked", "CaseFormat", "CaseView", "Study", "build_study", "read_key", "score"]
