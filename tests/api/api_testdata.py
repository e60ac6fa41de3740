"""Where the shared sample files are: ../shared/data beside the clone."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
