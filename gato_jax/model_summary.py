"""gato-model-summary: a config's parameter counts per module, measured abstractly (nothing allocated).

  gato-model-summary --config experiments/gato_79m.py

Prints clu's parameter table, the parameters per module, the totals under the conventions papers use
(with / without the token table, the patch encoder, the head), the gap to the paper's figure for the paper's three sizes, and
a last line `total_params=N` (every parameter).

Against the paper (text vocabulary 32000, so 34176 table rows once padded; tied embeddings; each
GEGLU branch 2/3 of the paper's FF hidden, i.e. the FF parameters of a plain 2-matrix MLP):

  preset      all parameters        without the token table   without table and patch encoder
  gato_79m     85,362,816 (+8.1%)    59,115,648 (-25.2%)       57,239,808 (-27.5%)
  gato_364m   396,940,416 (+9.0%)   344,446,080  (-5.4%)      340,996,608  (-6.3%)
  gato_1_2b 1,290,517,632 (+9.4%) 1,220,525,184  (+3.4%)    1,216,026,624  (+3.1%)

Counting everything is the one convention within 10% of all three figures, with a consistent sign;
excluding the token table fits the two larger sizes but misses 79M by a quarter. The paper's three
figures fit no single rule exactly: layers x (4 E^2 + 2 E F) alone is already 1.208B for the largest
size (above 1.18B), while 79M needs roughly a token table on top of that formula.
"""

import collections
import math

from absl import app
from clu import parameter_overview
from flax import nnx
import jax

from gato_jax import cli_flags
from gato_jax.model import Gato
from gato_jax.tokenizers.layout import VocabLayout

_CONFIG = cli_flags.CONFIG

# (num_layers, embed_dim) -> the paper's parameter count (docs/METHOD.md table).
PAPER_PARAMS = {(8, 768): ("gato_79m", 79e6), (12, 1536): ("gato_364m", 364e6),
                (24, 2048): ("gato_1_2b", 1.18e9)}


def abstract_params(config):
  """{path tuple: ShapeDtypeStruct} of every parameter of the config's model, via nnx.eval_shape."""
  layout = VocabLayout.from_config(config.vocab)
  model = nnx.eval_shape(lambda: Gato(config.model, layout, nnx.Rngs(0)))
  flat = nnx.state(model, nnx.Param).flat_state()
  return {tuple(str(k) for k in path): variable.get_value() for path, variable in flat}


def module_of(path) -> str:
  """Groups a parameter path into a module row: layers by sub-block, everything else by child."""
  if path[:2] == ("sequence_model", "layers"):
    return "/".join(path[:3])
  if path[:1] == ("embedding",):
    return "/".join(path[:2])
  return path[0] if len(path) <= 2 else "/".join(path[:2])


def count(tree_or_shapes) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree_or_shapes))


def conventions(params) -> dict[str, int]:
  """Totals with and without the parts papers differ on counting."""
  total = count(list(params.values()))
  table = sum(math.prod(x.shape) for p, x in params.items() if p[:2] == ("embedding", "token_table"))
  patch = sum(math.prod(x.shape) for p, x in params.items() if p[:2] == ("embedding", "patch_encoder"))
  head = sum(math.prod(x.shape) for p, x in params.items() if p[:1] == ("head",))
  return collections.OrderedDict([
      ("all parameters", total),
      ("without the token table", total - table),
      ("without the token table and the patch encoder", total - table - patch),
      ("without the token table, the patch encoder and an untied head", total - table - patch - head),
  ])


def summarize(config) -> str:
  """The report `gato-model-summary` prints for `config`."""
  params = abstract_params(config)
  rows = collections.OrderedDict()
  for path, value in params.items():
    rows.setdefault(module_of(path), []).append((path, value))
  # clu's table of every parameter (name, shape, dtype, size), then the totals per module.
  lines = [parameter_overview.get_parameter_overview({"/".join(p): v for p, v in params.items()},
                                                     include_stats=False), "",
           f"{'module':<40} {'params':>15}  parameters", "-" * 100]
  for module, entries in rows.items():
    n = sum(math.prod(v.shape) for _, v in entries)
    lines.append(f"{module:<40} {n:>15,}  {len(entries)}")
  lines.append("-" * 100)
  layout = VocabLayout.from_config(config.vocab)
  m = config.model
  lines.append(f"vocabulary: {layout.vocab_size} rows ({layout.text_vocab_size} text + "
               f"{layout.num_continuous_bins} continuous + {layout.num_discrete_values} discrete + "
               f"separator, padded to {layout.pad_to_multiple}); tied embeddings: {m.tie_embeddings}")
  totals = conventions(params)
  paper = PAPER_PARAMS.get((m.num_layers, m.embed_dim))
  for name, n in totals.items():
    gap = f"   ({(n / paper[1] - 1) * 100:+.1f}% vs the paper's {paper[0]})" if paper else ""
    lines.append(f"{name:<62} {n:>15,}{gap}")
  lines.append(f"total_params={totals['all parameters']}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=experiments/<preset>.py is required")
  print(summarize(_CONFIG.value))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
