"""The real product files of public e-commerce projects the tests import (never edited:
see ../shared/data/SOURCES.md), next to this checkout."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
