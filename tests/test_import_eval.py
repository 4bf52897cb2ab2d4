"""gato-eval on imported datasets without a simulator (#21): an RLDS dataset linked in place and a JAT
dataset get validation loss and action accuracy (no rollouts), named in --config.eval.tasks or found in
the mixture; an unknown name is one short line even in a data_dir of many datasets."""

import numpy as np
import pytest

pytest.importorskip("datasets")

from data_pipelines.importers import jat, rlds  # pylint: disable=g-import-not-at-top
from gato_jax.data import sources  # pylint: disable=g-import-not-at-top
from gato_jax.evaluation import evaluator as evaluator_lib, task_choice  # pylint: disable=g-import-not-at-top
from gato_jax.evaluation.datasets import EvaluationError  # pylint: disable=g-import-not-at-top
from testlib import foreign_fixtures as fixtures  # pylint: disable=g-import-not-at-top
import import_support  # pylint: disable=g-import-not-at-top


@pytest.mark.slow
def test_imported_datasets_get_offline_validation(tmp_path):
  data_dir = str(tmp_path / "data")
  refs = import_support.base_data_dir(data_dir)
  oxe = fixtures.write_rlds_fixture(str(tmp_path / "oxe"), name="oxe_eval", num_episodes=4, wild=True)
  rlds.import_rlds(oxe, "oxe_eval", data_dir, mapping={"image_size": [32, 32]})
  jat.import_jat(fixtures.write_jat_fixture(str(tmp_path / "jat")), "mujoco-hopper", "jat_hopper", data_dir)
  found = sources.discover_datasets(data_dir)
  refs += [found["oxe_eval"], found["jat_hopper"]]
  config, _ = import_support.train_a_few_steps(data_dir, tmp_path / "work", refs,
                                               "oxe_eval:1,jat_hopper:1,cartpole:1", image_tokens=-1)
  config.eval.offline = False  # the imported ones are validated all the same: it is all they can get
  config.eval.offline_batches = 1
  config.eval.offline_batch_size = 4
  config.eval.episodes_per_task = 1
  config.eval.num_envs = 1
  config.eval.max_steps = 5
  config.eval.captions = 0
  config.eval.gif = False
  config.eval.tasks = "oxe_eval,jat_hopper"
  evaluator = evaluator_lib.Evaluator(config, str(tmp_path / "work"))
  assert evaluator.offline_only == ["oxe_eval", "jat_hopper"] and not evaluator.datasets
  report = evaluator.evaluate_checkpoint()
  assert report["tasks"] == {} and "summary" not in report  # no NaN online summary written
  assert sorted(report["offline"]) == ["jat_hopper", "oxe_eval"]
  for name in ("oxe_eval", "jat_hopper"):
    metrics = report["offline"][name]
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["action_accuracy"] <= 1.0, metrics

  # From the mixture (no eval.tasks): cartpole rolls out, the imported ones are validated offline.
  config.eval.tasks = ""
  mixed = evaluator_lib.Evaluator(config, str(tmp_path / "work"))
  assert sorted(mixed.task_names) == ["cartpole", "jat_hopper", "oxe_eval"]
  assert sorted(mixed.offline_only) == ["jat_hopper", "oxe_eval"] and list(mixed.datasets) == ["cartpole"]


def test_an_unknown_task_is_one_short_line(tmp_path):
  data_dir = tmp_path / "data"
  from testlib import data_testing  # pylint: disable=g-import-not-at-top
  for i in range(20):
    data_testing.build_control_dataset(data_dir, data_testing.cartpole_like_spec(f"pole_{i:02d}"),
                                       {"train": 1, "validation": 1})
  config = data_testing.tiny_config(data_dir)
  config.eval.tasks = "pole_03,not_imported"
  with pytest.raises(EvaluationError) as error:
    task_choice.resolve_tasks(config)
  message = str(error.value)
  assert message.startswith("unknown task(s) ['not_imported']: the control datasets in ")
  assert "pole_11 and 8 more (gato-data list)" in message and len(message) < 400 and "\n" not in message
