"""FreeTumor core: tumor synthesis in CT and Visual Turing Tests of synthetic tumors.

The public API reads like a sentence::

    from freetumor_core import read_ct, read_labels
    ct = read_ct("ct.nii.gz")
    organs = read_labels("labels.nii.gz")
    result = synthesize(ct, organs, TumorSpec(organ="liver", size="small", count=2), seed=7)
"""

from .errors import InputError
from .labels import LabelMap, align_to, read_labels, read_name_map, totalsegmentator_names
from .phantom import make_phantom
from .synthesis import SynthesisResult, TumorSpec, synthesize
from .volume import Volume, from_ras_view, ras_view, read_ct, read_volume, write_volume

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "LabelMap",
    "SynthesisResult",
    "TumorSpec",
    "Volume",
    "__version__",
    "align_to",
    "from_ras_view",
    "make_phantom",
    "ras_view",
    "read_ct",
    "read_labels",
    "read_name_map",
    "read_volume",
    "synthesize",
    "totalsegmentator_names",
    "write_volume",
]
