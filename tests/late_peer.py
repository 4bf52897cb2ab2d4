"""Imported by gato-train (--module_import=late_peer) in multi-process tests: process 1 builds its data
GATO_TEST_LATE_PEER_S seconds after the others, as a process on a loaded host or a cold cache does."""

import os
import time

from gato_jax.training import loop

_make_data_iterator = loop.make_data_iterator


def _late_make_data_iterator(config, layout):
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 1:
    time.sleep(float(os.environ.get("GATO_TEST_LATE_PEER_S", "0")))
  return _make_data_iterator(config, layout)


loop.make_data_iterator = _late_make_data_iterator
