"""Fixtures shared by several test files."""

import pytest


@pytest.fixture
def forget_new_datasets():
  """Tasks a test registers leave data_pipelines.DATASETS afterwards (other tests list it)."""
  import data_pipelines as dp  # heavy (simulators): only for the tests that use this fixture
  before = set(dp.DATASETS)
  yield
  for name in set(dp.DATASETS) - before:
    dp.unregister(name)
