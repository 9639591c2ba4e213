"""Dataset scopes: one folder per dataset, and tables of two datasets never mix."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from project_conf import conf_params, section

from ica_captioning.data.scope import SCOPE_ATTR, check_one_scope, dataset_scope
from ica_captioning.hooks import DatasetScopeHooks


def _flickr(tmp_path, **changes):
    ann = tmp_path / "dataset_flickr8k.json"
    if not ann.exists():
        ann.write_text('{"images": []}')
    return (
        section("dataset")
        | {"name": "flickr8k", "annotations": str(ann), "instances": None}
        | changes
    )


def test_scope_names_the_dataset_and_changes_with_what_defines_it(tmp_path):
    synthetic, seed = section("ingestion")["synthetic"], conf_params()["seed"]
    base = dataset_scope(section("dataset"), synthetic, seed)
    assert base.startswith("synthetic-") and len(base) == len("synthetic-") + 12
    assert dataset_scope(section("dataset"), synthetic, seed) == base  # deterministic
    # The embedded dataset is defined by its generator settings (num_workers does not matter).
    assert dataset_scope(section("dataset"), synthetic | {"num_workers": 4}, seed) == base
    assert dataset_scope(section("dataset"), synthetic | {"num_images": 10}, seed) != base
    assert dataset_scope(section("dataset"), synthetic, seed + 1) != base  # synthetic.seed: null
    # A real dataset: its name, its dataset.* parameters and its annotation files.
    flickr = dataset_scope(_flickr(tmp_path), synthetic, seed)
    assert flickr.startswith("flickr8k-") and flickr != base
    assert dataset_scope(_flickr(tmp_path, images_dir="elsewhere"), synthetic, seed) != flickr
    ann = tmp_path / "dataset_flickr8k.json"
    ann.write_text('{"images": [1]}')  # edited annotations: another size
    edited = dataset_scope(_flickr(tmp_path), synthetic, seed)
    assert edited != flickr
    os.utime(ann, ns=(1, 1))  # same size, another modification time
    assert dataset_scope(_flickr(tmp_path), synthetic, seed) != edited
    assert dataset_scope(_flickr(tmp_path, name="flickr30k"), synthetic, seed).startswith(
        "flickr30k-"
    )


def test_tables_of_another_dataset_stop_the_node():
    ours, theirs = pd.DataFrame({"a": [1]}), pd.DataFrame({"a": [2]})
    ours.attrs[SCOPE_ATTR], theirs.attrs[SCOPE_ATTR] = "synthetic-aaa", "flickr8k-bbb"
    check_one_scope(
        {"images": ours, "params:x": {"k": 1}, "old": pd.DataFrame()}, "synthetic-aaa", "n"
    )
    with pytest.raises(ValueError) as err:
        check_one_scope({"images": ours, "detections": theirs}, "synthetic-aaa", "match_captions")
    message = str(err.value)
    for text in ("match_captions", "'detections'", "flickr8k-bbb", "synthetic-aaa", "images"):
        assert text in message


def test_hooks_stamp_written_tables_and_check_inputs():
    hooks = DatasetScopeHooks()
    hooks.scope = "synthetic-aaa"
    table = pd.DataFrame({"a": [1]})
    hooks.before_dataset_saved("images", table)
    assert table.attrs[SCOPE_ATTR] == "synthetic-aaa"
    hooks.before_dataset_saved("vocabulary", {"itos": []})  # not a table: left alone

    class _Node:
        name = "encode_captions"

    hooks.before_node_run(_Node(), {"images": table})
    hooks.scope = "flickr8k-bbb"
    with pytest.raises(ValueError, match="written for dataset 'synthetic-aaa'"):
        hooks.before_node_run(_Node(), {"images": table})
