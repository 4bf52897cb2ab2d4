"""The SeqIO pipeline on tiny TFDS datasets of every kind, checked against the raw episodes."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
seqio = pytest.importorskip("seqio")

from gato_jax import features
from gato_jax import tokenizers as tok
from gato_jax.data import mixtures, pipeline, sources, tasks
from testlib import data_testing as testing
from gato_jax.data.feature_converter import GatoFeatureConverter, task_feature_lengths
from gato_jax.episodes import TaskSpec
from gato_jax.tokenizers import TokenKind

L = 64
TARGETS = [int(k) for k in TokenKind.target_kinds()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  refs = testing.build_tiny_data_dir(data_dir)
  # A second copy of tiny_pole written as 4 files, so sharding by files is exercised too.
  testing.build_control_dataset(data_dir, testing.cartpole_like_spec("tiny_pole_files"),
                                {"train": 12, "validation": 4}, seed=5, num_shards=4)
  refs.append(sources.DatasetRef("tiny_pole_files", "control"))
  config = testing.tiny_config(data_dir, sequence_length=L, batch_size=8)
  return data_dir, refs, config


def raw_episodes(data_dir, name, split):
  """{episode_id: (spec, [step dicts])} straight from TFDS, as NumPy."""
  builder = tfds.builder(sources.tfds_name(name), data_dir=str(data_dir))
  spec = TaskSpec.from_dict(builder.info.metadata["task_spec"])
  out = {}
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    out[int(ex["episode_id"])] = list(ex["steps"])
  return spec, out


def numpy_stream(steps, spec, config):
  """The episode tokenized step by step by the NumPy tokenizers (the path acting uses)."""
  layout = tok.VocabLayout.from_config(config.vocab)
  text = tasks.PreprocessingOptions.from_config(config).vocabulary.text_tokenizer
  parts = [tok.tokenize_timestep(s["observation"], s["action"], spec, layout, text) for s in steps]
  starts = np.cumsum([0] + [len(p["tokens"]) for p in parts])
  return tok.stream.concat(parts), starts


def task_sequences(config, name, split="validation", n=None, **overrides):
  """Task-level sequences (with diagnostics) of one task, unshuffled, one pass unless n is given."""
  task = tasks.make_task(sources.DatasetRef(name, "control" if name.startswith("tiny") else name),
                         tasks.PreprocessingOptions.from_config(config, **overrides))
  ds = task.get_dataset(task_feature_lengths(L), split=split, shuffle=False, seed=3,
                        num_epochs=None if n else 1)
  return list(ds.take(n).as_numpy_iterator() if n else ds.as_numpy_iterator())


def convert(sequences):
  """The feature converter applied to task-level sequences."""
  keys = ("tokens", "kinds", "obs_positions", "patches", "patch_rows", "patch_cols")
  ds = tf.data.Dataset.from_generator(
      lambda: ({**{k: s[k] for k in keys}, "task_index": np.int32(0)} for s in sequences),
      output_signature={k: tf.TensorSpec([None] * (4 if k == "patches" else 2 if "patch_" in k else 1),
                                         tf.uint8 if k == "patches" else tf.int32) for k in keys}
      | {"task_index": tf.TensorSpec([], tf.int32)})
  return list(GatoFeatureConverter()(ds, task_feature_lengths(L)).as_numpy_iterator())


def test_batches_follow_the_feature_contract(tiny):
  _, refs, config = tiny
  it = pipeline.make_iterator(config, "train", process_index=1, process_count=2, seed=0, datasets=refs)
  seen = set()
  for _ in range(6):
    b = it.get_next()
    assert features.check_batch(b, L) == config.batch_size // 2
    kinds = b["kinds"]
    assert set(np.unique(kinds)) <= {int(k) for k in TokenKind}
    np.testing.assert_array_equal(b["loss_mask"], np.isin(b["target_kinds"], TARGETS).astype(np.float32))
    np.testing.assert_array_equal(b["targets"][:, :-1], b["tokens"][:, 1:])
    np.testing.assert_array_equal(b["target_kinds"][:, :-1], kinds[:, 1:])
    not_image = kinds != TokenKind.IMAGE
    assert not b["patches"][not_image].any() and not b["patch_rows"][not_image].any()
    assert (b["patch_rows"][~not_image, 1] > b["patch_rows"][~not_image, 0]).all()
    assert (b["tokens"][~not_image] == 0).all()
    seen |= set(b["task_index"].tolist())
  names = mixtures.task_names(pipeline.make_mixture(config, refs))
  assert names == sorted(["captions", "text", "tiny_grid", "tiny_pole", "tiny_reach"])
  assert seen <= set(range(len(names))) and len(seen) >= 3


@pytest.mark.parametrize("name", ["tiny_grid", "tiny_reach"])
def test_sequences_and_loss_mask_match_the_raw_episodes(tiny, name):
  data_dir, _, config = tiny
  spec, episodes = raw_episodes(data_dir, name, "validation")
  sequences = task_sequences(config, name, prompt_probability=0.0)
  assert sorted(int(s["episode_id"]) for s in sequences) == sorted(episodes)
  for seq, out in zip(sequences, convert(sequences)):
    stream, starts = numpy_stream(episodes[int(seq["episode_id"])], spec, config)
    n = min(L + 1, len(stream["tokens"]))
    found = [s for s in starts[:-1] if np.array_equal(stream["tokens"][s:s + n], seq["tokens"][:n])
             and np.array_equal(stream["kinds"][s:s + n], seq["kinds"][:n])]
    assert found, "the sequence is a window of its episode starting at a timestep"
    start = found[0]
    np.testing.assert_array_equal(seq["obs_positions"][:n], stream["obs_positions"][start:start + n])
    assert (seq["kinds"][n:] == TokenKind.PAD).all()
    raw_kinds = np.concatenate([stream["kinds"][start:start + n], np.zeros(L + 1 - n, np.int32)])
    np.testing.assert_array_equal(out["loss_mask"], (raw_kinds[1:] == TokenKind.ACTION).astype(np.float32))
    m = min(n, L)
    image = raw_kinds[:m] == TokenKind.IMAGE
    for key in ("patches", "patch_rows", "patch_cols"):
      np.testing.assert_array_equal(out[key][:m][image], stream[key][start:start + m][image], err_msg=key)


def test_prompts_in_a_quarter_of_sequences_from_other_episodes(tiny):
  data_dir, _, config = tiny
  spec, episodes = raw_episodes(data_dir, "tiny_pole", "train")
  streams = {i: numpy_stream(steps, spec, config) for i, steps in episodes.items()}
  sequences = task_sequences(config, "tiny_pole", split="train", n=400)
  prompted = [s for s in sequences if s["has_prompt"]]
  assert 0.18 <= len(prompted) / len(sequences) <= 0.32  # 0.25 +- 3.2 standard deviations
  at_end = sum(bool(s["prompt_at_end"]) for s in prompted)
  assert 0.3 <= at_end / len(prompted) <= 0.7
  for s in prompted:
    p = int(s["prompt_length"])
    assert 0 < p <= L // 2
    prompt = s["tokens"][:p]
    sources_of_prompt = []
    for i, (stream, starts) in streams.items():
      for start in starts[:-1]:
        if start + p in starts and np.array_equal(stream["tokens"][start:start + p], prompt):
          sources_of_prompt.append((i, start + p == starts[-1]))
    assert sources_of_prompt, "a prompt is a run of whole timesteps of an episode"
    assert any(i != int(s["episode_id"]) for i, _ in sources_of_prompt), "of ANOTHER episode"
    if s["prompt_at_end"]:
      assert any(end for _, end in sources_of_prompt), "goal prompts end at that episode's end"
    assert s["kinds"][p] != TokenKind.ACTION, "the window after the prompt starts at a timestep"


def test_text_and_caption_sequences(tiny):
  data_dir, _, config = tiny
  vocab = tasks.PreprocessingOptions.from_config(config).vocabulary
  docs = [vocab.text.encode(d["text"].decode()) + [vocab.eos_id] for d in tfds.as_numpy(
      tfds.builder(sources.tfds_name("text"), data_dir=str(data_dir)).as_dataset(split="validation"))]
  for seq in task_sequences(config, "text"):
    n = int((seq["kinds"] != TokenKind.PAD).sum())
    assert (seq["kinds"][:n] == TokenKind.TEXT).all() and (seq["tokens"][n:] == 0).all()
    window = seq["tokens"][:n].tolist()
    assert any(window == doc[i:i + n] for doc in docs for i in range(max(1, len(doc) - n + 1))), \
        "a window of a document (EOS-terminated), whole when shorter than L + 1"
  captions = tfds.as_numpy(tfds.builder(sources.tfds_name("captions"), data_dir=str(data_dir))
                           .as_dataset(split="validation"))
  truth = [c["caption"].decode() for c in captions]
  sequences = task_sequences(config, "captions")
  assert len(sequences) == len(truth) // 5
  out = convert(sequences)
  for i, (seq, converted) in enumerate(zip(sequences, out)):
    kinds = seq["kinds"]
    image_starts = np.flatnonzero((kinds == TokenKind.IMAGE) & (np.r_[0, kinds[:-1]] != TokenKind.IMAGE))
    assert len(image_starts) == 5, "5 (image, caption) pairs per sequence"
    assert seq["patches"].shape == (5 * 4, 16, 16, 3)  # 32x32 images: 4 patches each
    text = [vocab.decode(seq["tokens"][a:b].tolist()) for a, b in zip(image_starts, list(image_starts[1:]) + [L])]
    assert text == truth[5 * i:5 * i + 5]
    np.testing.assert_array_equal(converted["loss_mask"], np.isin(kinds[1:], TARGETS))


@pytest.mark.parametrize("name,num_processes", [("tiny_pole", 2), ("tiny_pole_files", 2), ("tiny_pole_files", 3),
                                                ("tiny_pole_files", 5)])
def test_process_shards_are_disjoint_and_cover_the_split(tiny, name, num_processes):
  """Through the mixture, shuffled and seeded as training reads: 1 file split by examples, 4 files split
  by files (2 and 3 processes) and 4 files split by examples (5 processes)."""
  data_dir, refs, config = tiny
  _, episodes = raw_episodes(data_dir, name, "train")
  mixture = mixtures.make_mixture(f"{name}:1", tasks.make_tasks(config, refs), refs)
  shards = []
  for p in range(num_processes):
    seed = mixtures.stream_seed(11, "process", p)  # as pipeline.make_dataset seeds process p
    ds = mixture.get_dataset(task_feature_lengths(L), "train", shuffle=True, seed=seed, num_epochs=1,
                             shard_info=seqio.ShardInfo(p, num_processes), passthrough_features=["episode_id"],
                             log_mixing_proportions=False)
    shards.append([int(s["episode_id"]) for s in ds.as_numpy_iterator()])
  flat = [i for s in shards for i in s]
  assert len(flat) == len(set(flat)), "no episode is read by two processes"
  assert set(flat) == set(episodes), "together they read the whole split"
  assert all(shards)


def test_same_seed_same_batches_and_exact_resume(tiny, tmp_path):
  data_dir, refs, _ = tiny
  config = testing.tiny_config(data_dir, mixture="tiny_grid:1,text:1", sequence_length=L, batch_size=4)

  def batches(it, n):
    return [it.get_next() for _ in range(n)]

  a = pipeline.make_iterator(config, "train", 0, 2, seed=7, datasets=refs)
  first = batches(a, 3)
  a.save(tmp_path / "iterator")
  after = batches(a, 3)
  b = pipeline.make_iterator(config, "train", 0, 2, seed=7, datasets=refs)
  for x, y in zip(first + after, batches(b, 6)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  b.restore(tmp_path / "iterator")  # back to where `a` was saved
  for x, y in zip(after, batches(b, 3)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"resumed: {k}")
  other_seed = pipeline.make_iterator(config, "train", 0, 2, seed=8, datasets=refs).get_next()
  assert not np.array_equal(other_seed["tokens"], first[0]["tokens"])


def test_eval_dataset_is_deterministic_and_padded(tiny):
  _, refs, config = tiny
  runs = [list(pipeline.make_eval_dataset(config, "tiny_grid", batch_size=3, datasets=refs).as_numpy_iterator())
          for _ in range(2)]
  assert len(runs[0]) == 2  # 4 validation episodes, one window each, batches of 3
  for x, y in zip(*runs):
    features.check_batch(x, L)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  last = runs[0][-1]
  assert last["loss_mask"][1:].sum() == 0 and (last["kinds"][1:] == TokenKind.PAD).all()
  assert last["loss_mask"][0].sum() > 0
  assert (runs[0][0]["task_index"] == 2).all()  # tiny_grid's index in the config's mixture


def test_tasks_follow_the_config_and_nothing_is_registered(tiny):
  """The same dataset and options give the same Task object, other options another; mixtures are made of
  those objects, and neither tasks nor mixtures land in seqio's process-wide registries (#22)."""
  _, refs, config = tiny
  registered = (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names()))
  before = tasks.make_tasks(config, refs)["tiny_pole"]
  assert tasks.make_tasks(config, refs)["tiny_pole"] is before
  changed = config.copy_and_resolve_references()
  changed.data.prompt_probability = 0.5
  assert tasks.make_tasks(changed, refs)["tiny_pole"] is not before
  local = pipeline.make_mixture(testing.tiny_config(config.data.data_dir, mixture="gato_local"), refs)
  assert mixtures.task_names(local) == sorted(r.name for r in refs)
  assert local.get_rate(before) == pytest.approx(0.85 / 4)
  assert (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())) == registered
  rates = mixtures.default_mixture_rates(refs)["gato_local"]
  assert rates["text"] == pytest.approx(0.10) and rates["captions"] == pytest.approx(0.05)
  assert sum(r for n, r in rates.items() if n.startswith("tiny")) == pytest.approx(0.85)


def test_a_mixture_reads_the_tasks_of_its_own_data_dir(tiny, tmp_path):
  """Two data_dirs with a dataset of the same name in one process: each config's mixture reads its own
  (a registry keyed by name would hand one of them the other's task)."""
  _, refs, config = tiny
  first = pipeline.make_mixture(testing.tiny_config(config.data.data_dir, mixture="tiny_pole:1"), refs)
  testing.build_control_dataset(tmp_path, testing.cartpole_like_spec(), {"train": 2, "validation": 1})
  moved = testing.tiny_config(str(tmp_path), mixture="tiny_pole:1")
  again = pipeline.make_mixture(moved)
  assert again.tasks[0] is not first.tasks[0]
  assert again.tasks[0].source.tfds_dataset.data_dir == str(tmp_path)
  assert first.tasks[0].source.tfds_dataset.data_dir == str(config.data.data_dir)


def test_named_mixtures_and_register_all_on_request(tiny):
  _, refs, config = tiny
  mixtures.register_mixture("tiny_named", {"tiny_pole": 1.0, "tiny_grid": 3.0})
  named = pipeline.make_mixture(testing.tiny_config(config.data.data_dir, mixture="tiny_named"), refs)
  assert mixtures.task_names(named) == ["tiny_grid", "tiny_pole"] and named.get_rate(named.tasks[0]) == 3.0
  assert "tiny_named" not in seqio.MixtureRegistry.names()
  try:
    assert tasks.register_all(config, refs) == [r.name for r in refs]
    assert seqio.get_mixture_or_task("tiny_pole") is tasks.make_tasks(config, refs)["tiny_pole"]
  finally:
    for ref in refs:
      seqio.TaskRegistry.remove(ref.name)
