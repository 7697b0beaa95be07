"""Synthesis engines behind one entry point: ``synthesize`` dispatches by ``spec.engine``.

An engine is any object with a ``name`` and the method of :class:`Engine`. Engines register a
factory under their name; :func:`get_engine` makes each engine once per process and keeps it, so an
engine that loads a model folder loads it once. Every engine that places tumors inside an organ
builds on :class:`~freetumor_core.synthesis.flow.PlacingEngine`, which does the engine-independent
steps (checking the spec, aligning labels, finding the organ and the tumor label, placing each tumor
with the shrink-on-failure loop) and leaves only painting and recording to the engine.

Callers (the command line, the MONAI transform, the reader-study builder, the demo, 3D Slicer)
import :func:`synthesize` from :mod:`freetumor_core.synthesis`, never an engine module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import InputError
from ..labels import LabelMap
from ..progress import ProgressLike
from ..volume import Volume
from .spec import SynthesisResult, TumorSpec


class Engine(Protocol):
    """What an engine provides.

    ``synthesize`` gets a validated spec and must return the new CT on the input's grid and dtype,
    the input's labels plus the tumor label, one record per tumor made (``engine`` = its name) and
    each tumor's box and mask (``tumor_parts``); the same inputs and seed give bit-identical
    outputs, painted into copies or, with ``in_place``, into the input arrays themselves. Bad input
    is an :class:`~freetumor_core.errors.InputError`.
    """

    name: str

    def synthesize(
        self,
        ct: Volume,
        organs: LabelMap,
        spec: TumorSpec,
        seed: int | None = None,
        progress: ProgressLike = None,
        in_place: bool = False,
    ) -> SynthesisResult: ...


_FACTORIES: dict[str, Callable[[], Engine]] = {}
_ENGINES: dict[str, Engine] = {}


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    """Make ``factory()`` the engine called ``name`` (replacing an engine of that name)."""
    _FACTORIES[name] = factory
    _ENGINES.pop(name, None)


def available_engines() -> tuple[str, ...]:
    """Names of the registered engines, sorted."""
    return tuple(sorted(_FACTORIES))


def get_engine(name: str) -> Engine:
    """The engine called ``name``, made on first use.

    Raises:
        InputError: no engine has that name (the message lists the available ones).
    """
    engine = _ENGINES.get(name)
    if engine is None:
        factory = _FACTORIES.get(name)
        if factory is None:
            raise InputError(
                f"unknown synthesis engine '{name}'; available: {', '.join(available_engines())}"
            )
        engine = _ENGINES[name] = factory()
    return engine


def synthesize(
    ct: Volume,
    organs: LabelMap,
    spec: TumorSpec | None = None,
    seed: int | None = None,
    progress: ProgressLike = None,
    in_place: bool = False,
) -> SynthesisResult:
    """Synthesize ``spec.count`` tumors inside ``spec.organ`` with the engine ``spec.engine``.

    Args:
        ct: CT in HU, any spacing (anisotropic is fine); not modified (unless ``in_place``).
        organs: organ labels with names; put on the CT grid (with a warning) if not already there.
        spec: what to make (default: one small liver tumor, handcrafted engine).
        seed: random seed; the same inputs and seed give bit-identical outputs.
        progress: a reporter or ``"bar"``/``"json"``/``"none"``; reports one step per tumor.
        in_place: paint into ``ct.array`` and ``organs.array`` themselves instead of into copies,
            for a caller that owns them already (a training crop); the result's volumes share
            those arrays, and the voxels are the same as without it. The labels must be on the
            CT's grid exactly, C-contiguous and of an integer type that holds the tumor label; no quality
            control (``spec.qc``: a rejected try would stay painted). On an error, tumors painted
            before it stay painted.

    Returns:
        The new CT (same grid and dtype), the label map with the original labels plus an
        ``<organ>_tumor`` label, one :class:`~freetumor_core.records.TumorRecord` per tumor and the
        new tumors' voxels (``tumor_parts``, ``tumor_mask``).

    Raises:
        InputError: bad spec or unknown engine, unknown or empty organ, or an organ that cannot hold
            the tumors (unless ``spec.allow_shrink``, which shrinks them with a warning), or, with
            ``spec.qc``, tumors the segmenter did not find in ``spec.qc_tries`` tries (see ``qc.py``).
    """
    spec = (spec or TumorSpec()).validated()
    engine = get_engine(spec.engine)
    if spec.qc is not None:
        if in_place:
            raise InputError("in-place synthesis cannot run quality control: a rejected try stays painted")
        from .qc import synthesize_checked

        return synthesize_checked(engine, ct, organs, spec, seed=seed, progress=progress)
    if in_place:
        return engine.synthesize(ct, organs, spec, seed=seed, progress=progress, in_place=True)
    return engine.synthesize(ct, organs, spec, seed=seed, progress=progress)


def _handcrafted() -> Engine:
    from .engine import HandcraftedEngine

    return HandcraftedEngine()


def _adversarial() -> Engine:
    from ..adversarial.engine import AdversarialEngine

    return AdversarialEngine()


register_engine("handcrafted", _handcrafted)
register_engine("adversarial", _adversarial)
