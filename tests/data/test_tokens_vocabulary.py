from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from project_conf import section

from ica_captioning.data.text import (
    Vocabulary,
    as_tokens,
    build_vocabulary,
    encode_captions,
    tokenize,
)
from ica_captioning.pipelines.ingestion.nodes import build_vocabulary as build_vocabulary_node
from ica_captioning.tokens import END_ID, PAD_ID, SPECIAL_WORDS, START_ID, UNK_ID


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        # Karpathy Flickr8k style: lower-case, final " ." dropped.
        (
            "A child in a pink dress is climbing up a set of stairs .",
            "a child in a pink dress is climbing up a set of stairs",
        ),
        ("Two RED circles, and a star!", "two red circles and a star"),
        ("A man's hat; black-and-white.", "a mans hat blackandwhite"),
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("“Quoted” — dash… done", "quoted dash done"),
        ("...", ""),
    ],
)
def test_tokenize_matches_karpathy_conventions(raw, tokens):
    assert tokenize(raw) == tokens.split()


def test_special_token_ids_follow_the_vocabulary_order():
    vocab = build_vocabulary([["a"]], min_freq=1, max_len=3)
    assert [vocab.stoi[w] for w in SPECIAL_WORDS] == [PAD_ID, START_ID, END_ID, UNK_ID]
    assert vocab.encode(["a", "zebra"]).tolist() == [START_ID, 4, UNK_ID, END_ID]


def test_as_tokens_gives_a_list_for_lists_and_parquet_arrays():
    assert as_tokens(np.array(["a", "dog"], dtype=object)) == ["a", "dog"]
    assert as_tokens(("a", "dog")) == ["a", "dog"]


def test_vocabulary_specials_min_freq_and_order():
    tokens = [["a", "red", "circle"], ["a", "blue", "circle"], ["a", "red", "star"]]
    vocab = build_vocabulary(tokens, min_freq=2, max_len=5)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.itos[4:] == ["a", "circle", "red"]  # by count, then alphabetically
    assert vocab.encode(["a", "blue", "circle"]).tolist() == [1, 4, 3, 5, 2]
    assert vocab.encode(["a"] * 9).tolist() == [1] + [4] * 5 + [2]  # truncated to max_len words
    assert vocab.encode(["a"]).dtype == np.int32
    assert Vocabulary.from_json(vocab.to_json()).itos == vocab.itos
    assert vocab.to_json() == {"itos": vocab.itos, "min_freq": 2, "max_len": 5}
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"], 1, 5)
    with pytest.raises(ValueError):
        build_vocabulary(tokens, min_freq=0, max_len=5)
    with pytest.raises(TypeError, match="max_len"):  # no code default: conf's value is used
        build_vocabulary(tokens, min_freq=2)


@given(
    st.lists(
        st.lists(
            st.sampled_from(["circle", "red", "two", "stars", "left", "of", "café"]), max_size=12
        ),
        min_size=1,
        max_size=20,
    ),
    st.integers(1, 15),
)
def test_encode_decode_round_trip(captions, max_len):
    vocab = build_vocabulary(captions, min_freq=1, max_len=max_len)
    for tokens in captions:
        ids = vocab.encode(tokens)
        assert ids[0] == 1 and ids[-1] == 2 and len(ids) == min(len(tokens), max_len) + 2
        assert vocab.decode(ids) == tokens[:max_len]
        assert vocab.decode(np.concatenate([ids, [0, 0]])) == tokens[:max_len]


def test_vocabulary_node_uses_train_split_only_and_encoding_table():
    captions = pd.DataFrame(
        {
            "caption_id": [1, 2, 3, 4],
            "image_id": [10, 10, 11, 12],
            "split": ["train", "train", "val", "test"],
            "raw": ["", "", "", ""],
            "tokens": [["a", "star"], ["a", "star", "above"], ["a", "zebra"], ["hoop"]],
        }
    )
    vocab = build_vocabulary_node(
        captions, section("ingestion", min_word_freq=1, max_caption_len=2)
    )
    assert vocab["itos"] == [*SPECIAL_WORDS, "a", "star", "above"]
    assert vocab["max_len"] == 2
    # Without an override the caption length is conf's (no code default competes with it).
    conf = section("ingestion", min_word_freq=1)
    assert build_vocabulary_node(captions, conf)["max_len"] == conf["max_caption_len"]
    encoded = encode_captions(captions, Vocabulary.from_json(vocab))
    assert encoded["ids"].map(list).tolist() == [
        [1, 4, 5, 2],
        [1, 4, 5, 2],
        [1, 4, 3, 2],
        [1, 3, 2],
    ]
    assert encoded["length"].tolist() == [4, 4, 4, 3]
    assert encoded["num_unk"].tolist() == [0, 0, 1, 1]
    assert encoded[["caption_id", "image_id", "split"]].equals(
        captions[["caption_id", "image_id", "split"]]
    )
