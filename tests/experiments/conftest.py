"""Fixtures of the experiments tests."""
from __future__ import annotations

import pytest

from history.importers import get_importer


@pytest.fixture()
def parc_store(store, shared_data):
    """The test's store, holding the real PARC history."""
    get_importer("parc").run(store, shared_data / "parc")
    return store
