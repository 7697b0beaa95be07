"""MG-3D report matching: report text, the frozen sentence encoder, zero-shot text scoring.

- :mod:`.text`: findings and impression sentences, negated and uncertain phrases (NegEx-style rules).
- :mod:`.encoder`: the frozen sentence encoder (all-MiniLM-L6-v2 or any local Hugging Face folder).
- :mod:`.zeroshot`: zero-shot abnormality scores from report text, plain cosine vs negation-aware.

``transformers`` (the ``reports`` extra) is imported only when an encoder is loaded.
"""

from .encoder import SentenceEncoder, default_model_folder, encode_sentences, load_encoder
from .text import POLARITIES, Phrase, Sentence, phrases_of, split_report, split_sentences
from .zeroshot import PROMPTS, ReportTable, read_report_table, zero_shot_text

__all__ = [
    "POLARITIES",
    "PROMPTS",
    "Phrase",
    "ReportTable",
    "Sentence",
    "SentenceEncoder",
    "default_model_folder",
    "encode_sentences",
    "load_encoder",
    "phrases_of",
    "read_report_table",
    "split_report",
    "split_sentences",
    "zero_shot_text",
]
