"""The adversarial engine: FreeTumor's generator, discriminator and segmentation-guided training.

- :mod:`.generator`: the tumor's crop, the networks' architectures and the difference map.
- :mod:`.engine`: ``TumorSpec(engine="adversarial")`` behind :func:`freetumor_core.synthesis.synthesize`.
- :mod:`.training`: ``SynthesizerTask`` on the shared trainer (``freetumor train synthesizer``).
- :mod:`.bench`: ``freetumor bench adversarial``.

Quality control by a frozen segmenter works with every engine: :mod:`freetumor_core.synthesis.qc`.
"""

from .generator import ORGANS, SynthesisSettings

__all__ = ["ORGANS", "SynthesisSettings"]
