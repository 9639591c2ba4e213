"""Makes the tiny-dataset helpers of tests/experiments (experiment_data.py) importable here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
