"""The frozen sentence encoder: the packaged all-MiniLM-L6-v2 through transformers, mean pooling."""

from __future__ import annotations

import re

import numpy as np
import pytest

from freetumor_core.errors import InputError
from freetumor_core.reports import default_model_folder, encode_sentences, load_encoder
from freetumor_core.reports.encoder import native_bf16

SENTENCES = [
    "Pericardial effusion-thickening was not observed.",
    "Pleural effusion measuring 14 mm in thickness on the right and 8 mm on the left and linear atelectatic "
    "changes in the adjacent lung parenchyma were observed.",
    "Heart size increased.",
    "Mild emphysematous changes were observed in both lungs.",
    "Trachea and lumen of both main bronchi are open.",
]


@pytest.fixture(scope="module")
def encoder():
    """The float32 reference (the default on a CPU with native bfloat16 is bfloat16)."""
    return load_encoder(device="cpu", precision="fp32")


def test_vectors_are_unit_length_in_input_order_whatever_the_batching(encoder):
    together = encode_sentences(SENTENCES, encoder, batch_size=64)
    one_by_one = np.stack([encode_sentences([s], encoder)[0] for s in SENTENCES])
    in_twos = encode_sentences(SENTENCES, encoder, batch_size=2)  # length-sorted batches of 2
    assert together.shape == (5, 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, one_by_one, atol=2e-5)
    np.testing.assert_allclose(in_twos, one_by_one, atol=2e-5)
    assert encode_sentences([], encoder).shape == (0, 384)


def test_agrees_with_sentence_transformers(encoder):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(default_model_folder()), device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    cosine = (encode_sentences(SENTENCES, encoder) * expected).sum(axis=1)
    assert cosine.min() > 0.99999, cosine


def test_similar_findings_are_closer_than_unrelated_ones(encoder):
    vectors = encode_sentences(
        ["pleural effusion", "Fluid in the right pleural space.", "Hiatal hernia."], encoder
    )
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_a_local_model_folder_replaces_the_default(tmp_path, encoder):
    import shutil

    folder = tmp_path / "my-bert"
    shutil.copytree(default_model_folder(), folder)
    other = load_encoder(folder, device="cpu")
    assert other is not encoder and other.folder == folder
    default = load_encoder(device="cpu")  # the same precision as the folder's encoder
    expected = default.encode(SENTENCES[:2])
    np.testing.assert_allclose(encode_sentences(SENTENCES[:2], folder, device="cpu"), expected)


def test_a_missing_or_foreign_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_encoder(tmp_path / "absent", device="cpu")
    with pytest.raises(InputError, match=re.escape("no config.json")):
        load_encoder(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        load_encoder(tmp_path, device="cpu")
    with pytest.raises(InputError, match="batch size"):
        encode_sentences(["x"], load_encoder(device="cpu"), batch_size=0)


def test_bfloat16_weights_agree_with_float32_and_auto_picks_them_only_where_native(encoder):
    fast = load_encoder(device="cpu", precision="bf16")
    assert fast.precision == "bf16" and fast is not encoder
    cosine = (fast.encode(SENTENCES) * encoder.encode(SENTENCES)).sum(axis=1)
    assert cosine.mean() >= 0.9995 and cosine.min() >= 0.999, cosine
    assert load_encoder(device="cpu").precision == ("bf16" if native_bf16("cpu") else "fp32")
    with pytest.raises(InputError, match="precision"):
        load_encoder(device="cpu", precision="int8")


def test_repeated_texts_are_encoded_once_and_get_the_same_row(encoder):
    texts = [SENTENCES[2], SENTENCES[0], SENTENCES[2], SENTENCES[2], SENTENCES[1]]
    vectors = encoder.encode(texts, batch_size=2)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_allclose(vectors[[1, 4, 0]], encoder.encode(SENTENCES[:3]), atol=2e-5)
