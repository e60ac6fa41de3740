"""Where the shared sample files are: ../shared/data beside the clone."""

from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
