"""Helpers of the FreeTumor Slicer modules that need no Slicer GUI.

- ``nodes``: MRML nodes <-> core objects (``Volume``, ``LabelMap``, ``TumorRecord``).
- ``runner``: runs ``python -m freetumor_core ... --progress json`` in a subprocess and reports its
  JSON events through callbacks; a timer in the widget calls ``poll()``.
- ``dependencies``: checks that ``freetumor_core`` is importable and offers to install it.
- ``synthesis``: one synthesis job from input nodes to output nodes (files, subprocess, loading).
- ``segmentation``: one tumor-segmentation job, the same way, and centring the views on a lesion.

``runner`` and ``dependencies`` import neither ``freetumor_core`` nor ``slicer`` at module level, so
the module panel can load and offer the installation when the core is missing.
"""
