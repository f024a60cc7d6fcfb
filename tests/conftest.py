"""Shared test settings: Hypothesis profiles and the trio-asyncio loop fixture."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio_asyncio
from hypothesis import HealthCheck, settings

# "ci" is what `make test` uses in CI; "dev" is quicker for local runs;
# "long" is for the recorded long runs (docs/reliability.md).
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
async def aio_loop() -> AsyncIterator[object]:
    """An asyncio loop running inside trio, for tests that touch aiosqlite or asyncssh."""
    async with trio_asyncio.open_loop() as loop:
        yield loop
