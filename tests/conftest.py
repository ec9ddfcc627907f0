import pytest

from optimizer.catalog.models import resolve_model


@pytest.fixture(scope="session")
def spec_of():
    cache = {}

    def get(key: str):
        if key not in cache:
            cache[key] = resolve_model(key)
        return cache[key]

    return get

