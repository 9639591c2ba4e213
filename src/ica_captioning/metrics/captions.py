"""Caption metrics with the coco-caption (pycocoevalcap) scorers, called directly.

``pycocoevalcap.eval.COCOEvalCap`` is not used: it needs a ``COCO`` object and its SPICE scorer
downloads Stanford CoreNLP on construction. Here each scorer is called on PTB-tokenised text
exactly as ``COCOEvalCap.evaluate`` does (the same tokenizer jar, command line and punctuation
filter), and every metric that cannot run on this machine is *reported* as unavailable with the
reason instead of raising:

* BLEU-1..4, ROUGE-L and CIDEr are pure Python (CIDEr is coco-caption's implementation, i.e.
  CIDEr-D: clipped counts and a length penalty, sigma = 6, scores x10).
* PTB tokenisation and METEOR need ``java``. Without it the text is tokenised by a Python
  approximation (lower-case, PTB punctuation removed; reported in ``status``) and METEOR is
  unavailable.
* An empty candidate (no words: the decoder ended at once, or only punctuation or white space)
  is scored as empty by every metric. METEOR gets it as an empty hypothesis, which METEOR 1.5
  scores 0 while its first reference's length still counts in the corpus recall, exactly as in
  coco-caption's evaluation (checked on Java 17: no failure, no hang). Every caption reaches
  METEOR's line-based stdin protocol as one line, so white space or line breaks inside a caption
  cannot desynchronise it; should the exchange fail anyway, the JVM is stopped and an error
  raised instead of leaving a locked, half-read process behind.
* SPICE needs ``spice-1.0.jar``, Stanford CoreNLP 3.6.0 (``stanford-corenlp-3.6.0.jar`` and
  ``-models.jar`` in ``pycocoevalcap/spice/lib``, which its constructor would otherwise download)
  and a Java whose major version is at most 13 (its LMDB cache and Kryo serialisation fail on newer
  JVMs). When any is missing the SPICE row has ``value = NaN`` and the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Metric names in report order (the names of the paper's Table 1 where it has them).
CAPTION_METRICS: tuple[str, ...] = (
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "METEOR",
    "ROUGE-L",
    "CIDEr",
    "SPICE",
)

#: Tokens coco-caption's PTBTokenizer drops after tokenising.
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--"]
    + ["...", ";"]
)

#: Highest Java major version SPICE 1.0 runs on.
SPICE_MAX_JAVA = 13


def _package_dir(sub: str) -> Path:
    import pycocoevalcap

    return Path(next(iter(pycocoevalcap.__path__))) / sub


@lru_cache(maxsize=1)
def java_major_version() -> int | None:
    """Major version of the ``java`` on ``PATH`` (``8`` for ``1.8.0_…``), ``None`` if absent."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java <= 8 reports "1.8.0_292": the major version is the second number.
    return int(match.group(2) or 0) if major == 1 else major


@dataclass(frozen=True)
class Availability:
    """Whether a Java-backed component can run here, and why not."""

    available: bool
    reason: str = ""


def ptb_availability() -> Availability:
    """Whether coco-caption's PTB tokenizer (Java) can run."""
    jar = _package_dir("tokenizer") / "stanford-corenlp-3.4.1.jar"
    if java_major_version() is None:
        return Availability(False, "java not found on PATH")
    if not jar.is_file():
        return Availability(False, f"PTB tokenizer jar missing: {jar}")
    return Availability(True)


def meteor_availability() -> Availability:
    """Whether METEOR 1.5 (Java) can run."""
    jar = _package_dir("meteor") / "meteor-1.5.jar"
    if java_major_version() is None:
        return Availability(False, "java not found on PATH (METEOR 1.5 is a Java program)")
    if not jar.is_file():
        return Availability(False, f"METEOR jar missing: {jar}")
    return Availability(True)


def spice_availability(spice_dir: str | os.PathLike | None = None) -> Availability:
    """Whether SPICE can run without downloading anything.

    Args:
        spice_dir: folder holding ``spice-1.0.jar`` and ``lib/``; default pycocoevalcap's.

    Returns:
        ``Availability(True)`` or ``Availability(False, reason)`` naming the missing jar or the
        unsupported Java.
    """
    root = Path(spice_dir) if spice_dir is not None else _package_dir("spice")
    missing = [
        str(p)
        for p in (
            root / "spice-1.0.jar",
            root / "lib" / "stanford-corenlp-3.6.0.jar",
            root / "lib" / "stanford-corenlp-3.6.0-models.jar",
        )
        if not p.is_file()
    ]
    if missing:
        return Availability(
            False,
            "Stanford CoreNLP 3.6.0 / SPICE jars missing (pycocoevalcap would download them): "
            + ", ".join(missing),
        )
    java = java_major_version()
    if java is None:
        return Availability(False, "java not found on PATH")
    if java > SPICE_MAX_JAVA:
        return Availability(
            False, f"SPICE 1.0 needs Java <= {SPICE_MAX_JAVA}; found Java {java} on PATH"
        )
    return Availability(True)


def _python_ptb_approximation(text: str) -> str:
    """Lower-case, split off punctuation and drop it (used only when Java is unavailable)."""
    tokens = re.findall(r"[a-z0-9]+|'[a-z]+|[^\sa-z0-9]", text.lower())
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def ptb_tokenize(captions: Mapping[Any, Sequence[str]]) -> tuple[dict[Any, list[str]], str]:
    """PTB-tokenise captions the way coco-caption does.

    Same jar, command line and punctuation filter as ``pycocoevalcap``'s ``PTBTokenizer``, but
    the temporary file goes to the system temp folder (the package folder may be read-only or
    shared by concurrent runs).

    Args:
        captions: key (image id) -> list of raw captions.

    Returns:
        ``(tokenised, status)``: key -> list of space-joined tokens (same order), and ``"ptb"`` or
        ``"python-approximation: <reason>"`` when Java is unavailable.
    """
    keys = [k for k, caps in captions.items() for _ in caps]
    # One sentence per line: line breaks inside a caption (\n, \r) would shift every later line.
    sentences = [" ".join(c.split()) for caps in captions.values() for c in caps]
    avail = ptb_availability()
    out: dict[Any, list[str]] = {k: [] for k in captions}
    if not sentences:
        return out, "ptb" if avail.available else f"python-approximation: {avail.reason}"
    if not avail.available:
        for k, s in zip(keys, sentences):
            out[k].append(_python_ptb_approximation(s))
        return out, f"python-approximation: {avail.reason}"

    jar_dir = _package_dir("tokenizer")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(sentences))
        path = f.name
    try:
        proc = subprocess.run(
            [
                "java",
                "-cp",
                str(jar_dir / "stanford-corenlp-3.4.1.jar"),
                "edu.stanford.nlp.process.PTBTokenizer",
                "-preserveLines",
                "-lowerCase",
                path,
            ],
            capture_output=True,
            check=False,
        )
    finally:
        os.unlink(path)
    lines = proc.stdout.decode("utf-8").split("\n")
    if proc.returncode != 0 or len(lines) < len(sentences):
        raise RuntimeError(
            f"PTB tokenizer failed (exit {proc.returncode}, {len(lines)} lines for "
            f"{len(sentences)} sentences): {proc.stderr.decode('utf-8', 'replace')[-500:]}"
        )
    for k, line in zip(keys, lines):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATIONS))
    return out, "ptb"


def _stop_jvm(process: subprocess.Popen) -> None:
    """Close the JVM's stdin, kill it and reap it (each a no-op when already done)."""
    if process.stdin is not None and not process.stdin.closed:
        try:
            process.stdin.close()
        except OSError:  # a dead JVM's pipe may fail to flush on close
            pass
    process.kill()
    process.wait()


def _row(metric: str, value: float, status: str = "ok", reason: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": float(value), "status": status, "reason": reason}


class CaptionScorer:
    """Scores several candidate sets against the same references, reusing one METEOR process.

    Use as a context manager (or call :meth:`close`) so the METEOR JVM is stopped.

    Args:
        spice: try SPICE (still reported unavailable, with the reason, when it cannot run);
            ``evaluation.metrics.spice``.
        meteor: compute METEOR (it starts a JVM that loads a paraphrase table, ~10 s);
            ``evaluation.metrics.meteor``.
    """

    def __init__(self, *, spice: bool, meteor: bool) -> None:
        self.spice = spice
        self.meteor = meteor
        self._meteor_scorer: Any = None

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR JVM if one was started."""
        scorer, self._meteor_scorer = self._meteor_scorer, None
        if scorer is not None:
            with scorer.lock:
                _stop_jvm(scorer.meteor_p)
            # pycocoevalcap's own __del__ repeats these calls later; on a closed pipe and a
            # reaped process they are no-ops.

    def _meteor(self, gts: Mapping[Any, list[str]], res: Mapping[Any, list[str]]) -> float:
        """Corpus METEOR 1.5 of tokenised captions, through one JVM started on first use.

        Each caption is sent as one line (runs of white space, line breaks included, become one
        space; PTB-tokenised text is unchanged by it). An empty candidate goes as an empty
        hypothesis: METEOR scores it 0 and counts its reference (module docstring).

        Raises:
            RuntimeError: the exchange with the JVM failed; the JVM is stopped and forgotten
                (the next call starts a fresh one).
        """
        if self._meteor_scorer is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor_scorer = Meteor()
        scorer = self._meteor_scorer

        def one_line(captions: Sequence[str]) -> list[str]:
            return [" ".join(str(c).split()) for c in captions]

        try:
            value, _ = scorer.compute_score(
                {k: one_line(v) for k, v in gts.items()}, {k: one_line(v) for k, v in res.items()}
            )
        except Exception as err:
            # pycocoevalcap's compute_score keeps its lock when it fails: release it, or stopping
            # the JVM (close, or the wrapper's __del__) would wait on it forever.
            self._meteor_scorer = None
            if scorer.lock.locked():
                scorer.lock.release()
            with scorer.lock:
                _stop_jvm(scorer.meteor_p)
            raise RuntimeError(
                f"METEOR failed ({type(err).__name__}: {str(err)[:300]}); its JVM was stopped. "
                "Set evaluation.metrics.meteor=false to report the other metrics without it."
            ) from err
        return float(value)

    def score(
        self,
        references: Mapping[Any, Sequence[str]],
        candidates: Mapping[Any, str],
    ) -> pd.DataFrame:
        """Corpus-level metrics of ``candidates`` against ``references``.

        Args:
            references: image id -> raw reference captions (at least one each).
            candidates: image id -> one raw generated caption; same keys as ``references``.

        Returns:
            One row per metric of :data:`CAPTION_METRICS`: ``metric``, ``value`` (NaN when
            unavailable), ``status`` (``ok`` / ``unavailable`` / ``disabled``, plus
            ``;tokenizer=python-approximation`` when Java is missing), ``reason``.

        Raises:
            ValueError: key sets differ, an image has no reference, or nothing to score.
        """
        ref_keys, cand_keys = set(references), set(candidates)
        if ref_keys != cand_keys:
            only_r, only_c = sorted(ref_keys - cand_keys)[:5], sorted(cand_keys - ref_keys)[:5]
            raise ValueError(
                f"references and candidates must cover the same images; only in references: "
                f"{only_r}, only in candidates: {only_c}"
            )
        if not ref_keys:
            raise ValueError("no captions to score")
        empty = [k for k, refs in references.items() if len(refs) == 0]
        if empty:
            raise ValueError(f"images without reference captions: {sorted(empty)[:5]}")

        gts, tok_status = ptb_tokenize(references)
        res, _ = ptb_tokenize({k: [candidates[k]] for k in references})
        return self.score_tokenized(gts, res, tokenizer_status=tok_status)

    def score_tokenized(
        self,
        gts: Mapping[Any, list[str]],
        res: Mapping[Any, list[str]],
        tokenizer_status: str = "ptb",
    ) -> pd.DataFrame:
        """Metrics on already tokenised captions (``res[k]`` is a one-element list)."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        gts, res = dict(gts), dict(res)
        rows: list[dict[str, Any]] = []
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rows += [_row(f"BLEU-{n + 1}", b) for n, b in enumerate(bleu)]

        meteor_avail = meteor_availability()
        if not self.meteor:
            rows.append(_row("METEOR", np.nan, "disabled", "disabled by parameter"))
        elif not meteor_avail.available:
            rows.append(_row("METEOR", np.nan, "unavailable", meteor_avail.reason))
        else:
            rows.append(_row("METEOR", self._meteor(gts, res)))

        rows.append(_row("ROUGE-L", Rouge().compute_score(gts, res)[0]))
        rows.append(_row("CIDEr", Cider().compute_score(gts, res)[0]))

        spice_avail = spice_availability()
        if not self.spice:
            rows.append(_row("SPICE", np.nan, "disabled", "disabled by parameter"))
        elif not spice_avail.available:
            rows.append(_row("SPICE", np.nan, "unavailable", spice_avail.reason))
        else:
            try:
                from pycocoevalcap.spice.spice import Spice

                rows.append(_row("SPICE", Spice().compute_score(gts, res)[0]))
            except Exception as err:  # noqa: BLE001 - SPICE's JVM failures must not sink the report
                rows.append(_row("SPICE", np.nan, "unavailable", f"SPICE failed: {err!r}"))

        table = pd.DataFrame(rows, columns=["metric", "value", "status", "reason"])
        if tokenizer_status != "ptb":
            table["status"] = table["status"] + ";tokenizer=" + tokenizer_status.split(":")[0]
            table["reason"] = np.where(
                table["reason"] == "",
                tokenizer_status,
                table["reason"] + "; " + tokenizer_status,
            )
        return table


def caption_metrics(
    references: Mapping[Any, Sequence[str]],
    candidates: Mapping[Any, str],
    *,
    spice: bool,
    meteor: bool,
) -> pd.DataFrame:
    """One-shot :meth:`CaptionScorer.score` (starts and stops its own METEOR process).

    Args:
        references: image id -> raw reference captions (at least one each).
        candidates: image id -> one raw generated caption; same keys as ``references``.
        spice: try SPICE (see :class:`CaptionScorer`).
        meteor: compute METEOR (see :class:`CaptionScorer`).

    Returns:
        The metrics table of :meth:`CaptionScorer.score`.
    """
    with CaptionScorer(spice=spice, meteor=meteor) as scorer:
        return scorer.score(references, candidates)


def join_words(tokens: Iterable[str]) -> str:
    """A caption string from word tokens."""
    return " ".join(tokens)
