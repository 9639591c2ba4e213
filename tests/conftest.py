"""Test-wide set-up: the helpers in this folder (``project_conf``) are importable everywhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
