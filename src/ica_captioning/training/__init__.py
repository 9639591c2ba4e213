"""Training of a captioner: batches, the loop, validation, checkpoints, DDP launch (no Kedro).

* :func:`train_captioner` — train one model from the stage tables and typed settings.
* :class:`NonFiniteLossError` — raised when the loss turns NaN/inf (the last good checkpoint
  is kept).
* :class:`NoTrainingLabelsError` — ``lambda_aux > 0`` but the training split has no
  pseudo-label (raised before any training work).
* :class:`CorruptCheckpointError` — ``train.resume`` met a ``last.pt`` that cannot be restored.
"""

from ica_captioning.training.checkpoint import CorruptCheckpointError
from ica_captioning.training.job import NoTrainingLabelsError, TrainJob, prepare_job
from ica_captioning.training.launch import run_job, train_captioner
from ica_captioning.training.loop import NonFiniteLossError

__all__ = [
    "CorruptCheckpointError",
    "NoTrainingLabelsError",
    "NonFiniteLossError",
    "TrainJob",
    "prepare_job",
    "run_job",
    "train_captioner",
]
