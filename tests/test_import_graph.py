"""The top-level packages depend on each other one way (docs/ARCHITECTURE.md): the import graph, read from
the sources, has no cycle, and the library never imports the builders, the launchers or the benchmarks."""

import ast
import os

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
