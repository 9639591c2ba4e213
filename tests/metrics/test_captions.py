import math
import subprocess
import sys
import threading

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from ica_captioning.metrics import captions as cm

REFERENCES = {
    1: [
        "A red circle is to the left of two blue squares.",
        "Two blue squares and a red circle.",
        "There's a red disc next to two blocks.",
    ],
    2: ["A yellow star above a green heart.", "A star and a heart, on a white background!"],
    3: ["Three purple triangles.", "Some purple triangles in a row."],
}
CANDIDATES = {1: "a red circle left of two blue squares", 2: "a yellow star", 3: "purple triangles"}

needs_java = pytest.mark.skipif(
    cm.java_major_version() is None, reason="java is not installed on this machine"
)


def coco_reference_scores(meteor):
    """Scores computed the coco-caption way: PTBTokenizer then each scorer."""
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in CANDIDATES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    met, _ = meteor.compute_score(gts, res)
    return {
        "BLEU-1": bleu[0],
        "BLEU-2": bleu[1],
        "BLEU-3": bleu[2],
        "BLEU-4": bleu[3],
        "METEOR": met,
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


@needs_java
def test_ptb_tokenize_matches_pycocoevalcap():
    ours, status = cm.ptb_tokenize(REFERENCES)
    theirs = PTBTokenizer().tokenize(
        {k: [{"caption": c} for c in v] for k, v in REFERENCES.items()}
    )
    assert status == "ptb"
    assert ours == theirs
    assert ours[1][2] == "there 's a red disc next to two blocks"


@needs_java
def test_ptb_tokenize_keeps_alignment_with_line_breaks_inside_captions():
    out, _ = cm.ptb_tokenize({1: ["A red\rcircle.", "two\nstars"], 2: ["A heart."]})
    assert out == {1: ["a red circle", "two stars"], 2: ["a heart"]}


@pytest.mark.slow
@needs_java
def test_caption_metrics_equal_pycocoevalcap_scorers():
    meteor = Meteor()  # one JVM (~10 s to load its paraphrase table) shared by both sides
    expected = coco_reference_scores(meteor)
    with cm.CaptionScorer(spice=False, meteor=True) as scorer:
        scorer._meteor_scorer = meteor
        table = scorer.score(REFERENCES, CANDIDATES)
    assert meteor.meteor_p.poll() is not None  # close() stopped the JVM
    assert list(table["metric"]) == list(cm.CAPTION_METRICS)
    got = dict(zip(table["metric"], table["value"]))
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    # Sanity of the example itself: a partial match, so the scores are strictly inside (0, 1).
    assert 0 < got["BLEU-1"] < 1 and 0 < got["CIDEr"]
    spice = table.set_index("metric").loc["SPICE"]
    assert math.isnan(spice["value"]) and spice["status"] == "disabled"


def test_bleu_rouge_cider_without_meteor_against_scorers():
    scorer = cm.CaptionScorer(spice=False, meteor=False)
    gts = {k: [c.lower().rstrip(".!") for c in v] for k, v in REFERENCES.items()}
    res = {k: [c] for k, c in CANDIDATES.items()}
    table = scorer.score_tokenized(gts, res).set_index("metric")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert table.loc["BLEU-4", "value"] == pytest.approx(bleu[3])
    assert table.loc["CIDEr", "value"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert table.loc["ROUGE-L", "value"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert table.loc["METEOR", "status"] == "disabled"


def test_hand_computed_bleu1_on_exact_match():
    # Identical candidate and reference: every n-gram precision is 1 and no brevity penalty.
    scorer = cm.CaptionScorer(spice=False, meteor=False)
    table = scorer.score_tokenized(
        {1: ["a red circle and a blue square"]}, {1: ["a red circle and a blue square"]}
    ).set_index("metric")
    assert table.loc["BLEU-1", "value"] == pytest.approx(1.0)
    assert table.loc["BLEU-4", "value"] == pytest.approx(1.0)
    assert table.loc["ROUGE-L", "value"] == pytest.approx(1.0)


def test_spice_unavailable_when_corenlp_jars_missing(tmp_path):
    (tmp_path / "spice-1.0.jar").write_bytes(b"")
    (tmp_path / "lib").mkdir()
    avail = cm.spice_availability(tmp_path)
    assert not avail.available
    assert "stanford-corenlp-3.6.0.jar" in avail.reason and "download" in avail.reason


def test_spice_unavailable_on_new_java(tmp_path, monkeypatch):
    for name in ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "lib/stanford-corenlp-3.6.0-models.jar").write_bytes(b"")
    monkeypatch.setattr(cm, "java_major_version", lambda: 17)
    avail = cm.spice_availability(tmp_path)
    assert not avail.available and "Java 17" in avail.reason
    monkeypatch.setattr(cm, "java_major_version", lambda: 8)
    assert cm.spice_availability(tmp_path).available


def test_spice_row_reports_reason_and_rest_is_complete(monkeypatch):
    monkeypatch.setattr(
        cm, "spice_availability", lambda spice_dir=None: cm.Availability(False, "jars missing")
    )
    scorer = cm.CaptionScorer(spice=True, meteor=False)
    table = scorer.score_tokenized({1: ["a red circle"]}, {1: ["a red circle"]}).set_index("metric")
    assert math.isnan(table.loc["SPICE", "value"])
    assert table.loc["SPICE", "status"] == "unavailable"
    assert table.loc["SPICE", "reason"] == "jars missing"
    assert np.isfinite(table.drop(index=["SPICE", "METEOR"])["value"]).all()


def test_without_java_metrics_degrade_with_reasons(monkeypatch):
    monkeypatch.setattr(cm, "java_major_version", lambda: None)
    table = cm.caption_metrics(REFERENCES, CANDIDATES, spice=True, meteor=True).set_index("metric")
    assert table.loc["METEOR", "status"].startswith("unavailable")
    assert "java not found" in table.loc["METEOR", "reason"]
    assert table.loc["SPICE", "status"].startswith("unavailable")
    assert "tokenizer=python-approximation" in table.loc["BLEU-4", "status"]
    assert np.isfinite(table.loc[["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"], "value"]).all()


def test_python_tokenizer_approximation():
    assert cm._python_ptb_approximation("There's a Red disc, left!") == "there 's a red disc left"


def test_bad_inputs():
    with pytest.raises(ValueError, match="same images"):
        cm.caption_metrics({1: ["a"]}, {2: "a"}, meteor=False, spice=False)
    with pytest.raises(ValueError, match="without reference"):
        cm.caption_metrics({1: []}, {1: "a"}, meteor=False, spice=False)
    with pytest.raises(ValueError, match="no captions"):
        cm.caption_metrics({}, {}, meteor=False, spice=False)


@pytest.mark.slow
@needs_java
def test_meteor_scores_empty_candidates_as_empty_without_failing_or_hanging():
    meteor = Meteor()  # one JVM for the reference values and the scorer
    gts, _ = cm.ptb_tokenize(REFERENCES)

    def coco_meteor(candidates):
        res, _ = cm.ptb_tokenize({k: [c] for k, c in candidates.items()})
        return meteor.compute_score(gts, res)

    def meteor_of(table):
        row = table.set_index("metric").loc["METEOR"]
        assert row["status"] == "ok"
        return row["value"]

    with_empty = {**CANDIDATES, 2: ""}
    with cm.CaptionScorer(spice=False, meteor=True) as scorer:
        scorer._meteor_scorer = meteor
        got = meteor_of(scorer.score(REFERENCES, with_empty))
        # coco-caption's value: the empty hypothesis scores 0, its reference still counts.
        expected, per_image = coco_meteor(with_empty)
        assert per_image[1] == 0.0 and per_image[0] > 0
        assert got == pytest.approx(expected, abs=1e-12)
        assert got < coco_meteor({**CANDIDATES, 2: "a yellow star"})[0]
        # A caption of white space and line breaks only is just as empty (sent as one line).
        blank = scorer.score_tokenized(gts, {1: [" \n "], 2: ["\r\n"], 3: ["purple triangles"]})
        empty = scorer.score_tokenized(gts, {1: [""], 2: [""], 3: ["purple triangles"]})
        assert 0 < meteor_of(empty) < 1
        assert meteor_of(blank) == pytest.approx(meteor_of(empty), abs=1e-12)
        # Nothing but empty candidates: every metric 0, METEOR included.
        nothing = scorer.score(REFERENCES, dict.fromkeys(REFERENCES, "")).set_index("metric")
        assert (nothing.loc[["BLEU-4", "METEOR", "ROUGE-L", "CIDEr"], "value"] == 0).all()
        # The JVM is still in step afterwards: the full candidates score as coco-caption's.
        again = meteor_of(scorer.score(REFERENCES, CANDIDATES))
        assert again == pytest.approx(coco_meteor(CANDIDATES)[0], abs=1e-12)
    assert meteor.meteor_p.poll() is not None  # close() stopped the JVM


def test_failed_meteor_exchange_raises_and_does_not_hang(monkeypatch):
    # A METEOR wrapper whose JVM has already died (no java needed): pycocoevalcap's
    # compute_score fails while holding its lock; the scorer must release it, stop the process
    # and raise — closing it afterwards must return at once instead of waiting on the lock.
    monkeypatch.setattr(cm, "meteor_availability", lambda: cm.Availability(True))
    dead = Meteor.__new__(Meteor)
    dead.meteor_p = subprocess.Popen(
        [sys.executable, "-c", "pass"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    dead.meteor_p.wait()
    dead.lock = threading.Lock()
    scorer = cm.CaptionScorer(spice=False, meteor=True)
    scorer._meteor_scorer = dead
    try:
        with pytest.raises(RuntimeError, match="METEOR failed .*evaluation.metrics.meteor=false"):
            scorer.score_tokenized({1: ["a red circle"]}, {1: ["a red circle"]})
        assert not dead.lock.locked() and scorer._meteor_scorer is None
        closing = threading.Thread(target=scorer.close, daemon=True)
        closing.start()
        closing.join(timeout=10)
        assert not closing.is_alive()
    finally:
        if dead.lock.locked():  # only after a failure above: let garbage collection finish
            dead.lock.release()
