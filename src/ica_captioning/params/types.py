"""Value types shared by several parameter schemas."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field


def _check_device(value: str) -> str:
    if value == "cpu" or re.fullmatch(r"cuda(:\d+)?", value):
        return value
    raise ValueError("must be cpu, cuda or cuda:N")


#: ``cpu``, ``cuda`` or ``cuda:N``.
Device = Annotated[str, AfterValidator(_check_device)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
