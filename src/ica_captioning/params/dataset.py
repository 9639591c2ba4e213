"""Schema of ``params:dataset`` and the project ``seed`` (conf/base/parameters.yml)."""

from __future__ import annotations

from typing import Literal

from ica_captioning.params.base import Params

DatasetName = Literal["synthetic", "flickr8k", "flickr30k", "coco"]


class DatasetParams(Params):
    """Which dataset the project runs on (layouts: docs/data.md)."""

    name: DatasetName
    format: Literal["karpathy", "coco"]
    #: karpathy: one split JSON; coco: a file, folder, glob or ``{split: path}`` mapping.
    annotations: str | list[str] | dict[str, str | list[str]]
    images_dir: str
    instances: str | list[str] | None
