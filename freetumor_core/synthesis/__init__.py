"""Tumor synthesis: put realistic tumors into healthy organs of a CT.

``synthesize(ct, organs, TumorSpec(organ="liver", size="small", count=2), seed=7)`` returns a
:class:`SynthesisResult` with the new CT, the label map and one ``TumorRecord`` per tumor.
"""

from .engine import synthesize
from .spec import SynthesisResult, TumorSpec

__all__ = ["SynthesisResult", "TumorSpec", "synthesize"]
