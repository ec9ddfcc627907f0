"""Shared fixtures and the hypothesis profiles.

Profiles (both derandomized: the same examples every run, so a failure reproduces and timings are stable):
    default   fast: property tests run a fraction of their examples (tests/hyp.py: examples(n))
    ci-long   thorough: every property test runs its full example count
              python -m pytest --hypothesis-profile=ci-long        (add -m "slow or not slow" for everything)
"""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# rigopt's disk cache (optimizer/disk_cache.py) goes to a folder of this test run, never the user's ~/.cache; CLI
# subprocesses inherit it
os.environ.setdefault("RIGOPT_CACHE_DIR", tempfile.mkdtemp(prefix="rigopt-test-cache-"))

from optimizer.catalog.models import resolve_model

settings.register_profile("default", derandomize=True, deadline=None, max_examples=20, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci-long", derandomize=True, deadline=None, max_examples=400, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@pytest.fixture(scope="session")
def spec_of():
    cache = {}

    def get(key: str):
        if key not in cache:
            cache[key] = resolve_model(key)
        return cache[key]

    return get


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/golden/*.json from the current output (also: RIGOPT_UPDATE_GOLDEN=1)")


@pytest.fixture(scope="session")
def update_goldens(request) -> bool:
    """True when golden files are to be (re)written instead of compared."""
    import os
    return bool(request.config.getoption("--update-goldens") or os.environ.get("RIGOPT_UPDATE_GOLDEN"))


@pytest.fixture(autouse=True)
def _no_user_profile(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user's calibration profile (~/.config/rigopt/profile.yaml): the XDG
    config dir of every test is an empty temporary folder (inherited by the CLI children tests start)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
