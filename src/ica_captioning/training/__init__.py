"""Training of a captioner: batches, the loop, validation, checkpoints, DDP launch (no Kedro).

* :func:`train_captioner` — train one model from the stage tables and typed settings.
* :class:`NonFiniteLossError` — raised when the loss turns NaN/inf (the last good checkpoint
  is kept).
"""

from ica_captioning.training.job import TrainJob, prepare_job
from ica_captioning.training.launch import run_job, train_captioner
from ica_captioning.training.loop import NonFiniteLossError

__all__ = ["NonFiniteLossError", "TrainJob", "prepare_job", "run_job", "train_captioner"]
