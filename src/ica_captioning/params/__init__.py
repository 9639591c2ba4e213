"""Typed, validated parameters of every stage.

The values live in ``conf/base/parameters_<stage>.yml`` and nowhere else; these schemas give
them names and types. Nodes parse their ``params:<stage>`` once (``TrainParams.parse(raw,
"train")``) and pass the typed object on; a wrong key or type stops the run with its full name.
"""

from ica_captioning.params.base import ParameterError, Params, deep_merge
from ica_captioning.params.dataset import DatasetParams
from ica_captioning.params.detection import DetectionParams
from ica_captioning.params.evaluation import EvaluationParams
from ica_captioning.params.experiments import ExperimentsParams
from ica_captioning.params.ingestion import IngestionParams
from ica_captioning.params.matching import MatchingParams
from ica_captioning.params.pretraining import PretrainingParams
from ica_captioning.params.train import ModelParams, TrainParams

#: Schema of each top-level section of the parameters (``params:<key>``).
SECTIONS: dict[str, type[Params]] = {
    "dataset": DatasetParams,
    "ingestion": IngestionParams,
    "detection": DetectionParams,
    "matching": MatchingParams,
    "pretraining": PretrainingParams,
    "train": TrainParams,
    "evaluation": EvaluationParams,
    "experiments": ExperimentsParams,
}

__all__ = [
    "SECTIONS",
    "DatasetParams",
    "DetectionParams",
    "EvaluationParams",
    "ExperimentsParams",
    "IngestionParams",
    "MatchingParams",
    "ModelParams",
    "ParameterError",
    "Params",
    "PretrainingParams",
    "TrainParams",
    "deep_merge",
]
