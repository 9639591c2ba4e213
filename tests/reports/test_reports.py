import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ica_captioning.reports import (
    DIFFERENCE_LABEL,
    TABLE1_METRICS,
    VARIANT_LABELS,
    attention_figure,
    attention_figures,
    comparison_table,
    figure_sample,
    head_attention_figure,
    table1,
    training_curves_figure,
    upsample_attention,
    with_keys,
)
from ica_captioning.reports.figures import load_image
from ica_captioning.variants import (
    BASELINE,
    ICA,
    LABELS,
    TRANSFORMER_BASELINE,
    TRANSFORMER_ICA,
)


def _caption_rows(variant, values, dataset="flickr8k"):
    frame = pd.DataFrame({"metric": list(values), "value": list(values.values())})
    frame["status"] = "ok"
    return with_keys(frame, dataset, variant, "test", "run-1")


def _grounding_rows(variant, value, dataset="flickr8k"):
    frame = pd.DataFrame(
        {
            "captions": ["generated", "reference"],
            "masks": ["pseudo_labels", "pseudo_labels"],
            "metric": ["attention_correctness"] * 2,
            "value": [value, value + 0.1],
            "count": [10, 20],
        }
    )
    return with_keys(frame, dataset, variant, "test", "run-1")


def test_with_keys_puts_report_columns_first():
    out = _caption_rows("ica", {"BLEU-1": 0.5})
    assert list(out.columns) == [
        "dataset",
        "variant",
        "split",
        "metric",
        "value",
        "run_id",
        "status",
    ]
    assert out["value"].dtype == np.float64


def test_comparison_table_layout_and_differences():
    base = {"BLEU-1": 0.6460, "BLEU-4": 0.2339, "CIDEr": 0.5874, "METEOR": 0.2032,
            "ROUGE-L": 0.5306, "SPICE": float("nan"), "CHAIR-i": 0.2}  # fmt: skip
    ica = {"BLEU-1": 0.6576, "BLEU-4": 0.2453, "CIDEr": 0.5939, "METEOR": 0.2256,
           "ROUGE-L": 0.5479, "SPICE": float("nan"), "CHAIR-i": 0.1}  # fmt: skip
    caps = pd.concat(
        [_caption_rows("baseline", base), _caption_rows("ica", ica),
         _caption_rows("baseline", base, "coco"), _caption_rows("ica", ica, "coco")]
    )  # fmt: skip
    ground = pd.concat([_grounding_rows("baseline", 0.3), _grounding_rows("ica", 0.5)])
    comp = comparison_table(caps, ground)
    assert comp["dataset"].tolist() == ["coco"] * 3 + ["flickr8k"] * 3
    assert comp["model"].tolist()[:3] == ["Show-Attend-Tell", "+ICA Loss", DIFFERENCE_LABEL]
    assert list(comp.columns[4:10]) == TABLE1_METRICS
    flickr = comp[comp["dataset"] == "flickr8k"].set_index("variant")
    assert flickr.loc["difference", "BLEU-4"] == pytest.approx(0.2453 - 0.2339)
    assert flickr.loc["difference", "CHAIR-i"] == pytest.approx(-0.1)
    assert math.isnan(flickr.loc["difference", "SPICE"])
    col = "attention_correctness [generated/pseudo_labels]"
    assert flickr.loc["difference", col] == pytest.approx(0.2)
    assert flickr.loc["ica", "attention_correctness [reference/pseudo_labels]"] == pytest.approx(
        0.6
    )
    # Grounding exists only for flickr8k here: NaN for coco, not a crash.
    assert comp[comp["dataset"] == "coco"][col].isna().all()
    assert (comp["run_id"] == "run-1").all()
    t1 = table1(comp)
    assert list(t1.columns) == ["dataset", "model", *TABLE1_METRICS]


def test_comparison_with_one_variant_has_no_difference_row():
    comp = comparison_table(_caption_rows("baseline", {"BLEU-1": 0.5}), pd.DataFrame())
    assert comp["variant"].tolist() == ["baseline"]


def test_upsample_attention_preserves_constant_and_peak_location():
    const = upsample_attention(np.full((4, 4), 0.25), 32, 32)
    assert const.shape == (32, 32)
    np.testing.assert_allclose(const, 0.25, atol=1e-6)
    peak = np.zeros((4, 4))
    peak[0, 3] = 1.0
    up = upsample_attention(peak, 40, 40)
    r, c = np.unravel_index(up.argmax(), up.shape)
    assert r < 10 and c >= 30  # top-right cell stays top-right


def test_attention_figure_panels():
    image = np.zeros((32, 32, 3), np.uint8)
    maps = np.random.default_rng(0).dirichlet(np.ones(16), size=3).reshape(3, 4, 4)
    fig = attention_figure(
        image,
        [("SAT", ["a", "red", "circle"], maps), ("+ICA", ["a", "star"], maps[:2])],
        max_words=5,
        title="image 1",
    )
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    # rows: 1 image panel + words each -> (1 + 3) + (1 + 2)
    assert len(visible) == 7
    titles = [ax.get_title() for ax in visible]
    assert "circle" in titles and "star" in titles
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        attention_figure(image[..., 0], [])


def test_training_curves_one_panel_per_numeric_column():
    a = pd.DataFrame({"epoch": [1, 2], "train_ce": [3.0, 2.0], "val_bleu4": [0.1, 0.2]})
    b = pd.DataFrame({"epoch": [1, 2], "train_ce": [3.1, 2.1], "train_ica": [0.9, 0.8]})
    fig = training_curves_figure({"SAT": a, "+ICA": b})
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_visible())
    assert titles == ["train_ce", "train_ica", "val_bleu4"]
    ce = next(ax for ax in fig.axes if ax.get_title() == "train_ce")
    assert len(ce.get_lines()) == 2
    # Settings, flags and timings get no panel.
    c = a.assign(lambda_aux=0.1, best=[True, False], epoch_time_s=[50.0, 40.0])
    titles = sorted(ax.get_title() for ax in training_curves_figure({"x": c}).axes)
    assert titles == ["train_ce", "val_bleu4"]
    empty = training_curves_figure({"SAT": pd.DataFrame()})
    assert any(t.get_text() == "no training history" for ax in empty.axes for t in ax.texts)


def test_variant_labels_are_the_variants_labels():
    assert VARIANT_LABELS is LABELS
    assert {k: LABELS[k] for k in (BASELINE, ICA)} == {
        BASELINE: "Show-Attend-Tell",
        ICA: "+ICA Loss",
    }
    assert LABELS[TRANSFORMER_BASELINE] == "Transformer"
    assert LABELS[TRANSFORMER_ICA] == "Transformer +ICA Loss"


def test_comparison_has_a_block_per_pair_and_keeps_unpaired_models():
    base = {"BLEU-4": 0.20, "CIDEr": 0.6}
    caps = pd.concat(
        [_caption_rows(TRANSFORMER_ICA, {"BLEU-4": 0.26, "CIDEr": 0.8}),
         _caption_rows("other", {"BLEU-4": 0.1, "CIDEr": 0.3}),
         _caption_rows(TRANSFORMER_BASELINE, {"BLEU-4": 0.25, "CIDEr": 0.7}),
         _caption_rows(BASELINE, base), _caption_rows(ICA, {"BLEU-4": 0.22, "CIDEr": 0.65})]
    )  # fmt: skip
    ground = pd.concat([_grounding_rows(v, 0.1 * i) for i, v in enumerate(
        (BASELINE, ICA, TRANSFORMER_BASELINE, TRANSFORMER_ICA))])  # fmt: skip
    comp = comparison_table(caps, ground)
    assert comp["variant"].tolist() == [
        BASELINE, ICA, "difference", TRANSFORMER_BASELINE, TRANSFORMER_ICA,
        "transformer_difference", "other",
    ]  # fmt: skip
    assert comp["model"].tolist()[3:] == [
        "Transformer", "Transformer +ICA Loss", "Δ (+ICA − Transformer)", "other",
    ]  # fmt: skip
    by = comp.set_index("variant")
    assert by.loc["transformer_difference", "CIDEr"] == pytest.approx(0.1)
    assert by.loc["difference", "BLEU-4"] == pytest.approx(0.02)
    col = "attention_correctness [generated/pseudo_labels]"
    assert by.loc["transformer_difference", col] == pytest.approx(0.1)
    assert math.isnan(by.loc["other", col])
    # The Transformer pair alone: its block, no SAT rows.
    only = comparison_table(caps[caps["variant"].str.startswith("transformer")], pd.DataFrame())
    assert only["variant"].tolist() == [TRANSFORMER_BASELINE, TRANSFORMER_ICA,
                                        "transformer_difference"]  # fmt: skip


def test_head_attention_figure_has_a_mean_row_and_a_row_per_map():
    image = np.zeros((32, 32, 3), np.uint8)
    maps = np.random.default_rng(0).dirichlet(np.ones(16), size=(3, 2)).reshape(3, 2, 4, 4)
    labels = ["layer 2 head 1", "layer 2 head 2"]
    fig = head_attention_figure(image, "Transformer", ["a", "red", "circle"], maps, labels,
                                max_words=5, title="t", overlay_alpha=0.6)  # fmt: skip
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3 * (1 + 3)  # mean + 2 heads, each the image and 3 words
    row_titles = [ax.get_title(loc="left") for ax in visible if ax.get_title(loc="left")]
    assert row_titles[0].startswith("Transformer: mean of 2 maps")
    assert row_titles[2].startswith("Transformer: layer 2 head 2")
    with pytest.raises(ValueError, match="maps must be"):
        head_attention_figure(image, "x", ["a"], maps, labels, max_words=5, title="",
                              overlay_alpha=0.6)  # fmt: skip


def test_figure_sample_is_seeded_sorted_and_capped():
    ids = [7, 3, 11, 5, 2]
    drawn = figure_sample(ids, 3, seed=0)
    assert drawn == figure_sample(ids, 3, seed=0) and drawn == sorted(drawn)
    assert len(drawn) == 3 and set(drawn) <= set(ids)
    assert all(type(i) is int for i in drawn)
    assert figure_sample(ids, 10, seed=1) == sorted(ids)
    assert figure_sample(ids, 0, seed=0) == []


def test_attention_figures_one_row_per_variant(tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 12), (200, 10, 10)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (12, 16, 3)
    images = pd.DataFrame({"image_id": [4], "file_path": ["a.png"]})
    maps = np.random.default_rng(0).dirichlet(np.ones(4), size=2).reshape(-1)  # 2 words, 2x2
    generated = pd.DataFrame(
        {"image_id": [4], "tokens": [["a", "star"]], "grid_size": [2], "attention": [maps]}
    )
    figures = attention_figures(
        {BASELINE: generated, ICA: generated.assign(tokens=[["a", "ring"]])},
        images,
        tmp_path,
        num_images=2,
        max_words=4,
        seed=0,
        overlay_alpha=0.6,
    )
    assert list(figures) == ["image_4.png"]
    axes = [ax for ax in figures["image_4.png"].axes if ax.get_visible()]
    # Rows in the given order, each labelled with its variant's label (image panel title).
    labels = [ax.get_title(loc="left").split("\n")[0] for ax in axes if ax.get_title(loc="left")]
    assert labels == [LABELS[BASELINE], LABELS[ICA]]
    assert [ax.get_title() for ax in axes if ax.get_title()] == ["a", "star", "a", "ring"]
