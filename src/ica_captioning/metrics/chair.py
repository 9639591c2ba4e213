"""CHAIR object-hallucination rates (Rohrbach et al. 2018).

Reference: "Object Hallucination in Image Captioning", EMNLP 2018.
Over a set of generated captions, with the image's ground-truth object classes:

* ``CHAIR-i = |hallucinated object mentions| / |object mentions|``
* ``CHAIR-s = |captions with >= 1 hallucinated mention| / |captions|``

An *object mention* is a caption word (or multi-word name) that the project's lexicon maps to one
of the ``classes`` under evaluation (the dataset's object categories; words for other classes are
ignored, as the original restricts itself to the 80 COCO categories). Each mention counts once,
as in the original implementation (``two dogs ... a dog`` is two mentions). An ambiguous word
resolves to the first of its candidate classes present in the image, else its first candidate.
A mention is hallucinated when its class is not among the image's ground-truth objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from ica_captioning.data.text import as_tokens
from ica_captioning.matching.lexicon import Lexicon, default_lexicon


def caption_mentions(
    tokens: Iterable[str],
    ground_truth: Iterable[str],
    classes: Iterable[str] | None = None,
    lexicon: Lexicon | None = None,
) -> list[tuple[int, str, bool]]:
    """The object mentions of one caption.

    Args:
        tokens: caption words.
        ground_truth: classes present in the image.
        classes: classes under evaluation (``None``: every lexicon class).
        lexicon: words -> classes (default: the package lexicon).

    Returns:
        ``[(token_position, class_name, hallucinated), ...]`` in caption order.
    """
    lexicon = lexicon or default_lexicon()
    truth = set(ground_truth)
    allowed = None if classes is None else set(classes)
    out = []
    for pos, cands in lexicon.mentions(as_tokens(tokens)):
        if allowed is not None:
            cands = tuple(c for c in cands if c in allowed)
        if not cands:
            continue
        cname = next((c for c in cands if c in truth), cands[0])
        out.append((pos, cname, cname not in truth))
    return out


def chair(
    captions: pd.DataFrame,
    ground_truth: Mapping[int, Iterable[str]],
    classes: Iterable[str] | None = None,
    lexicon: Lexicon | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """CHAIR-i and CHAIR-s of generated captions.

    Args:
        captions: ``image_id`` and ``tokens`` (list of words) per generated caption.
        ground_truth: image id -> classes present (every image of ``captions`` must have an
            entry, possibly empty).
        classes: classes under evaluation (the dataset's object categories).
        lexicon: words -> classes.

    Returns:
        ``(summary, per_caption)``: summary has ``CHAIR-i``, ``CHAIR-s`` (NaN when there is no
        mention / no caption), ``mentions``, ``hallucinated_mentions``, ``captions``,
        ``hallucinating_captions``; ``per_caption`` has ``image_id``, ``mentions``,
        ``hallucinated`` (lists of class names).

    Raises:
        ValueError: an image has no ground-truth entry.
    """
    missing = sorted(set(int(i) for i in captions["image_id"]) - set(ground_truth))
    if missing:
        raise ValueError(f"no ground-truth objects for image(s) {missing[:10]}")
    classes = None if classes is None else list(classes)
    mentioned, hallucinated = [], []
    for iid, toks in zip(captions["image_id"], captions["tokens"]):
        found = caption_mentions(toks, ground_truth[int(iid)], classes, lexicon)
        mentioned.append([c for _, c, _ in found])
        hallucinated.append([c for _, c, h in found if h])
    per_caption = pd.DataFrame(
        {
            "image_id": captions["image_id"].to_numpy(),
            "mentions": mentioned,
            "hallucinated": hallucinated,
        }
    )
    n_mentions = sum(len(m) for m in mentioned)
    n_hall = sum(len(h) for h in hallucinated)
    n_caps = len(per_caption)
    n_hall_caps = sum(bool(h) for h in hallucinated)
    summary = {
        "CHAIR-i": n_hall / n_mentions if n_mentions else float("nan"),
        "CHAIR-s": n_hall_caps / n_caps if n_caps else float("nan"),
        "mentions": float(n_mentions),
        "hallucinated_mentions": float(n_hall),
        "captions": float(n_caps),
        "hallucinating_captions": float(n_hall_caps),
    }
    return summary, per_caption
