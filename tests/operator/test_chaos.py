"""The chaos campaign (tests/operator/chaos.py): a short seeded run in `make test`;
`make chaos` runs a longer one (CHAOS_IMPORTS, CHAOS_FAULTS, CHAOS_CATALOGS, CHAOS_SEED;
CHAOS_KINDS, a comma list of operator,loader,minio,apiserver,cancel, narrows the faults)."""

from __future__ import annotations

import os
import random

import pytest
from chaos import FAULTS, Campaign, run

pytestmark = pytest.mark.cluster


def test_imports_survive_killed_operators_loaders_minio_and_api_server(cluster, minio, tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    campaign = Campaign(
        seed=seed,
        catalogs=int(os.environ.get("CHAOS_CATALOGS", 2)),
        imports=int(os.environ.get("CHAOS_IMPORTS", 8)),
        faults=int(os.environ.get("CHAOS_FAULTS", 6)),
        kinds=tuple(os.environ.get("CHAOS_KINDS", ",".join(FAULTS)).split(",")),
    )
    outcome = run(cluster, minio, campaign, tmp_path)
    print(outcome.summary(campaign))
    assert not outcome.violations, outcome.summary(campaign)
    assert sum(outcome.injected.values()) > 0, "no fault found anything to hit"
