"""The top-level packages depend on each other one way (docs/ARCHITECTURE.md): the import graph, read from
the sources, has no cycle, and the library never imports the builders, the launchers or the benchmarks.
Inside gato_jax the graph of files has no cycle either, imports sit at module top (but for the allow-lists
below, each with its reason), and importing gato_jax.envs loads neither TensorFlow nor JAX."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("gato_jax", "data_pipelines", "experiments", "launch", "bench")
# What each package may import. gato_jax/envs may not even import TensorFlow or JAX: replay.py renders
# GIFs in a child process that must stay free of both.
ALLOWED = {
    "gato_jax": {"gato_jax"},
    "data_pipelines": {"data_pipelines", "gato_jax"},
    "experiments": {"experiments"},
    "launch": {"launch", "gato_jax", "data_pipelines", "experiments"},
    "bench": {"bench", "gato_jax", "data_pipelines", "experiments"},
}


# Third-party modules a gato_jax function may import where it needs them, and why (prefix match).
LAZY_THIRD_PARTY = {
    "tensorflow": "acting and synthetic-data training run without TensorFlow; only tf.data paths load it",
    "seqio": "the acting agent loads SeqIO (SentencePiece) only when a task observes text",
    "jax": "the data pipeline needs jax only for its default process index; gato-train joins the peers first",
    "jax._src": "private API, tried and guarded: it may move between JAX versions",
    "jax.experimental": "backend-only pieces: Pallas kernels, libtpu topologies (after their env vars), "
                        "multi-host gathers",
    "libtpu": "optional: present only on TPU hosts and for compile-only checks",
    "gymnasium": "optional simulator, loaded when a task is built",
    "dm_control": "optional simulator (MuJoCo), loaded when a task is built",
    "minigrid": "optional simulator (BabyAI), loaded when a task is built",
    "metaworld": "optional simulator, loaded when a task is built",
    "ale_py": "optional simulator (Atari), loaded when a task is built",
    "PIL": "image resizing only; Pillow arrives only through matplotlib",
    "matplotlib": "the evaluation report's plot only; slow to import",
    "tensorboardX": "the evaluation report's TensorBoard scalars only",
    "imageio": "GIF writing, in the replay child process only",
    "etils": "remote (gs://) workdir locks only",
    "fcntl": "POSIX only",
}
# gato_jax files that import our own modules inside functions, and why.
LAZY_OURS = {
    "gato_jax/train.py": "entry point: flags parse, --help answers and --module_import runs before JAX/TF load, "
                         "and jax.distributed joins the peers before anything touches a device",
    "gato_jax/evaluate.py": "entry point: flags parse and --module_import runs before JAX/TF load",
    "gato_jax/training/loop.py": "gato_jax.data (TensorFlow + SeqIO) only for real data: synthetic-data runs "
                                 "and the train-step benchmark never load TensorFlow",
}


def imports_of(path: str) -> set[str]:
  """Top-level names of every module `path` imports (at any depth: lazy imports count too)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


def package_files(package: str):
  for folder, _, files in os.walk(os.path.join(ROOT, package)):
    for name in files:
      if name.endswith(".py"):
        yield os.path.join(folder, name)


def edges() -> dict[str, set[str]]:
  graph = {p: set() for p in PACKAGES}
  for package in PACKAGES:
    for path in package_files(package):
      graph[package] |= imports_of(path) & set(PACKAGES)
  return graph


def test_each_package_imports_only_what_it_may():
  bad = {}
  for package in PACKAGES:
    for path in package_files(package):
      extra = (imports_of(path) & set(PACKAGES)) - ALLOWED[package]
      if extra:
        bad[os.path.relpath(path, ROOT)] = sorted(extra)
  assert not bad, f"imports against the one-way dependency rule: {bad}"


def test_the_package_graph_is_acyclic():
  graph = {p: targets - {p} for p, targets in edges().items()}
  visiting, done = set(), set()

  def visit(node, trail):
    if node in visiting:
      pytest.fail(f"import cycle: {' -> '.join(trail + [node])}")
    if node in done:
      return
    visiting.add(node)
    for target in sorted(graph[node]):
      visit(target, trail + [node])
    visiting.discard(node)
    done.add(node)

  for package in PACKAGES:
    visit(package, [])


def test_simulators_import_neither_tensorflow_nor_jax():
  heavy = {"tensorflow", "tensorflow_datasets", "seqio", "jax", "flax", "optax", "orbax"}
  bad = {os.path.relpath(p, ROOT): sorted(imports_of(p) & heavy)
         for p in package_files(os.path.join("gato_jax", "envs")) if imports_of(p) & heavy}
  assert not bad, bad


def module_name(path: str) -> str:
  name = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def file_imports(path: str) -> list[tuple[str, int, bool]]:
  """(absolute module name, line, inside a function) of every import of `path`; `from a import b` gives
  a.b, which names a module or, when it names a function or class, stands for module a."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module_name(path).split(".")
  if not path.endswith("__init__.py"):
    package = package[:-1]
  out = []

  def walk(node, in_function):
    for child in ast.iter_child_nodes(node):
      inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        out.extend((a.name, child.lineno, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          base = ".".join(package[:len(package) - child.level + 1] + ([base] if base else []))
        out.extend((f"{base}.{a.name}", child.lineno, in_function) for a in child.names)
      walk(child, inside)

  walk(tree, False)
  return out


def library_modules() -> dict[str, str]:
  return {module_name(p): p for p in package_files("gato_jax")}


def file_graph() -> dict[str, set[str]]:
  """gato_jax module -> the gato_jax modules it imports (anywhere in the file)."""
  modules = library_modules()
  graph = {}
  for name, path in modules.items():
    targets = set()
    for imported, _, _ in file_imports(path):
      target = imported if imported in modules else imported.rpartition(".")[0]
      if target in modules and target != name:
        targets.add(target)
    graph[name] = targets
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as a path (first node repeated at its end), or None."""
  visiting, done = [], set()

  def visit(node):
    if node in visiting:
      return visiting[visiting.index(node):] + [node]
    if node in done:
      return None
    visiting.append(node)
    for target in sorted(graph.get(node, ())):
      cycle = visit(target)
      if cycle:
        return cycle
    visiting.pop()
    done.add(node)
    return None

  for node in sorted(graph):
    cycle = visit(node)
    if cycle:
      return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_library_files_import_without_a_cycle():
  """Functions' imports count (they hid the last circles). A module's edge up to its own package is
  left out: Python runs the package's __init__ first whatever the module imports."""
  graph = file_graph()
  assert "gato_jax.data.sources" in graph["gato_jax.data.foreign"]  # the reader sees real edges
  cycle = find_cycle({n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()})
  assert cycle is None, f"import cycle among files: {' -> '.join(cycle)}"


def test_imports_inside_functions_are_only_the_allowed_ones():
  bad = []
  for name, path in library_modules().items():
    rel = os.path.relpath(path, ROOT)
    for imported, line, in_function in file_imports(path):
      if not in_function:
        continue
      if imported.split(".")[0] == "gato_jax":
        if rel not in LAZY_OURS:
          bad.append(f"{rel}:{line} {imported}")
      elif not any(imported == p or imported.startswith(p + ".") for p in LAZY_THIRD_PARTY):
        bad.append(f"{rel}:{line} {imported}")
  assert not bad, ("imports inside functions; move them to module top, or, for an optional heavy "
                   f"dependency, add it with its reason to the allow-list: {bad}")


def test_importing_the_simulators_loads_neither_tensorflow_nor_jax():
  """Every module of gato_jax/envs, the built-in domains and what a recorded environment's task maps
  observations with (gato-eval's GIF child unpickles it next to MuJoCo's renderer)."""
  code = ("import importlib, pkgutil, sys, gato_jax.envs\n"
          "for m in pkgutil.walk_packages(gato_jax.envs.__path__, 'gato_jax.envs.'):\n"
          "  importlib.import_module(m.name)\n"
          "from gato_jax.envs import recorded, registry\n"
          "registry.names()  # the built-in domains load on first use\n"
          "recorded.EpisodeMapping, recorded.map_observation  # the mapping a recorded task applies\n"
          "print(sorted(m for m in ('tensorflow', 'jax', 'seqio', 'flax') if m in sys.modules))")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300, check=True)
  assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


# Rooms of gato_jax that must not import others (docs/ARCHITECTURE.md): the model stands on its own,
# training and evaluation both stand on it and never on each other backwards, the simulators on the
# episode schema and the NumPy mapping only.
FORBIDDEN = {
    "model": {"data", "training", "evaluation", "envs", "checkpointing", "acting", "serving"},
    "data": {"model", "training", "evaluation", "envs", "acting", "serving"},
    "training": {"evaluation", "envs", "acting", "serving"},
    "tokenizers": {"data", "model", "training", "evaluation", "envs", "acting", "serving"},
    "acting": {"data", "training", "evaluation", "serving"},
    "serving": {"data", "training", "evaluation"},
    "envs": {"data", "model", "training", "evaluation", "tokenizers", "features", "partitioning"},
}


def test_the_library_rooms_depend_one_way():
  bad = []
  for name, targets in file_graph().items():
    room = name.split(".")[1] if "." in name else ""
    for target in targets:
      if target.split(".")[1] in FORBIDDEN.get(room, ()):
        bad.append(f"{name} -> {target}")
  assert not bad, f"imports against the rooms' one-way rule: {sorted(bad)}"


def _defines_flags(module: str) -> bool:
  path = os.path.join(ROOT, *module.split(".")) + ".py"
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    return "flags.DEFINE" in f.read()


def test_the_flag_modules_the_tests_import_live_together():
  """pytest imports every test file into one process, so the project modules they import that define
  absl flags at import (entry points) must not define the same flag twice; a bench script's pure logic
  belongs in a flag-free module beside it (as bench/peer_rows.py beside bench/peer_torch.py)."""
  ours = set(PACKAGES)
  modules = set()
  for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
    if not name.endswith(".py"):
      continue
    with open(os.path.join(ROOT, "tests", name), encoding="utf-8") as f:
      tree = ast.parse(f.read(), name)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        modules |= {a.name for a in node.names if a.name.split(".")[0] in ours}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
          node.module.split(".")[0] in ours:
        modules |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
  flagged = sorted(m for m in modules if _defines_flags(m))
  assert flagged, "the tests import gato-train's and data_pipelines' flag modules: this list is never empty"
  code = f"import importlib\nfor m in {flagged!r}:\n  importlib.import_module(m)\nprint('ok')"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (flagged, out.stderr[-2000:])
