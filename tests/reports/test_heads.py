"""Per-head grounding of a Transformer captioner, against the evaluation pipeline's own path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from experiment_data import (  # noqa: E402
    experiment_sections,
    grid_inputs,
    make_experiment_dataset,
)

from ica_captioning.decoding.runner import decode_split  # noqa: E402
from ica_captioning.experiments import grid  # noqa: E402
from ica_captioning.matching.lexicon import Lexicon  # noqa: E402
from ica_captioning.metrics.grounding import REFERENCE, grounding_words  # noqa: E402
from ica_captioning.metrics.objects import PSEUDO_LABELS  # noqa: E402
from ica_captioning.model import load_captioner  # noqa: E402
from ica_captioning.reports.heads import (  # noqa: E402
    ALL_MEAN,
    best_head,
    head_grounding,
    head_selections,
)

TRANSFORMER = {"d_model": 16, "num_layers": 2, "num_heads": 4, "d_ff": 32, "dropout": 0.0,
               "encoder_layers": 0, "max_len": 12}  # fmt: skip
VARIANTS = {
    "baseline": {"masks": "true", "train_overrides": {"lambda_aux": 0.0}},
    "transformer_ica": {
        "masks": "true",
        "train_overrides": {"architecture": "transformer", "alpha_c": 0.0,
                            "transformer": TRANSFORMER},
    },
}  # fmt: skip
AC = "attention_correctness [reference/pseudo_labels]"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("heads")
    data = make_experiment_dataset(root / "data")
    sections = experiment_sections(root, data["images_dir"], VARIANTS, [0])
    exp, evaluation, training = grid_inputs(data, sections, head_selection_split="val")
    (spec,) = grid.plan_grid(exp, sections["train"], ["transformer_ica"])
    outcome = grid.run_one(spec, training, evaluation)
    yield {"data": data, "evaluation": evaluation, "outcome": outcome}
    torch.set_num_threads(threads)


def _reference_ac(model, evaluation, pseudo_labels, layers, heads) -> float:
    """Mean reference AC through decode_split and grounding_words with one selection set."""
    model.decoder.attention_layers, model.decoder.attention_heads = layers, heads
    generated, references = decode_split(
        model, evaluation.images, evaluation.references, evaluation.images_dir,
        beam_size=1, max_len=3, length_penalty=0.0, allow_unk=True, batch_size=2, progress=False,
        cpu_attention="tiled",
    )  # fmt: skip
    combos = grounding_words(
        generated, references, pseudo_labels, evaluation.object_grids, Lexicon.from_package(), 0.5
    )
    (words,) = [w for c, m, w in combos if c == REFERENCE and m == PSEUDO_LABELS]
    assert len(words) > 0
    return float(words["attention_correctness"].mean())


def test_every_selection_matches_the_step_wise_evaluation_path(trained):
    model = load_captioner(trained["outcome"].bundle)
    evaluation = trained["evaluation"]
    pseudo = trained["data"]["pseudo_labels"]
    table = head_grounding(
        model, evaluation.images, evaluation.references, pseudo, evaluation.images_dir, mass=0.5
    )
    labels = [s.label for s in head_selections(2, 4)]
    assert table["selection"].drop_duplicates().tolist() == labels
    values = table[table["metric"] == "attention_correctness"].set_index("selection")["value"]
    assert values.nunique() > 3  # the heads really differ
    for layer, head in [(0, 1), (1, 3)]:
        expected = _reference_ac(model, evaluation, pseudo, [layer], [head])
        assert values[f"L{layer}.H{head}"] == pytest.approx(expected, abs=1e-5)
    assert values["L1.mean"] == pytest.approx(
        _reference_ac(model, evaluation, pseudo, [1], [0, 1, 2, 3]), abs=1e-5
    )
    assert values[ALL_MEAN] == pytest.approx(
        _reference_ac(model, evaluation, pseudo, [0, 1], [0, 1, 2, 3]), abs=1e-5
    )


def test_grid_rows_of_a_transformer_run(trained):
    results = trained["outcome"].results
    metrics = set(results["metric"])
    for label in [s.label for s in head_selections(2, 4)]:
        assert f"{AC} @{label}" in metrics
        assert f"attention_iou_topk [reference/pseudo_labels] @{label}" in metrics
    # The default selection (last layer, head mean) is the evaluated map itself.
    value = dict(zip(results["metric"], results["value"]))
    assert value[f"{AC} @L1.mean"] == pytest.approx(value[AC], abs=1e-6)
    index = int(value["best_head_index"])
    assert 0 <= index < 8
    assert value[f"{AC} @best_head"] == value[f"{AC} @L{index // 4}.H{index % 4}"]


def test_best_head_is_chosen_on_one_split_and_scored_on_the_other():
    def table(values):
        rows = [(f"L0.H{h}", 0, h, "attention_correctness", v, 5) for h, v in enumerate(values)]
        rows.append(("L0.mean", 0, -1, "attention_correctness", 0.99, 5))  # not a single head
        return pd.DataFrame(
            rows, columns=["selection", "layer", "head", "metric", "value", "count"]
        )

    label, chosen, scored = best_head(table([0.2, 0.7, np.nan]), table([0.9, 0.3, 0.8]))
    assert (label, chosen, scored) == ("L0.H1", 0.7, 0.3)
    with pytest.raises(ValueError, match="no single-head"):
        best_head(table([np.nan]), table([0.5]))


def test_a_show_attend_tell_model_is_refused(tmp_path):
    from project_conf import model_params

    from ica_captioning.model import build_captioner

    model = build_captioner(
        model_params(encoder={"backbone": "resnet18", "layer": "layer1", "grid_size": 4,
                              "image_size": 32}), 11)  # fmt: skip
    empty = pd.DataFrame(columns=["caption_id", "image_id", "tokens", "ids"])
    with pytest.raises(ValueError, match="needs a Transformer decoder.*AttentionDecoder"):
        head_grounding(model, pd.DataFrame(), empty, pd.DataFrame(), tmp_path, mass=0.5)
