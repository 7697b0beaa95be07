"""Tumor synthesis: put realistic tumors into healthy organs of a CT.

``synthesize(ct, organs, TumorSpec(organ="liver", size="small", count=2), seed=7)`` returns a
:class:`SynthesisResult` with the new CT, the label map and one ``TumorRecord`` per tumor. The engine
is ``spec.engine`` (``handcrafted`` by default; :func:`available_engines` lists them).
"""

from .engines import Engine, available_engines, get_engine, register_engine, synthesize
from .spec import SynthesisResult, TumorSpec, spec_fields

__all__ = [
    "Engine",
    "SynthesisResult",
    "TumorSpec",
    "available_engines",
    "get_engine",
    "register_engine",
    "spec_fields",
    "synthesize",
]
