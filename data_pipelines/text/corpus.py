"""The English corpus that ships with Python: the language reference topics and the stdlib's docstrings.

Two sources, both part of every CPython install (so nothing downloads):
  pydoc_topics       pydoc_data.topics: the Python Language Reference, one entry per topic (~0.5 MB)
  stdlib_docstrings  docstrings of the standard library's modules, classes and functions, read with
                     `ast` (nothing is imported), one document per module (~1.5 MB)
Documents are cut at paragraph boundaries into chunks of at most MAX_DOCUMENT_CHARS, so a training
window of L tokens covers most of one. The content follows the running Python version (recorded in
the dataset's metadata). Users with their own corpus pass text files instead (`files=`).
"""

import ast
import functools
import hashlib
import os
import sysconfig
from typing import Iterable, Iterator, Optional, Sequence

MAX_DOCUMENT_CHARS = 4000
MIN_DOCUMENT_CHARS = 200
VALIDATION_PERCENT = 5
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "ensurepip"}


def chunk(text: str, max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
  """Splits at blank lines into pieces of at most max_chars (a longer paragraph is cut at lines)."""
  pieces, current = [], ""
  for paragraph in text.split("\n\n"):
    while len(paragraph) > max_chars:  # one oversized paragraph: cut at a line break or hard
      cut = paragraph.rfind("\n", 0, max_chars)
      cut = cut if cut > 0 else max_chars
      pieces.append(paragraph[:cut])
      paragraph = paragraph[cut:].lstrip("\n")
    if current and len(current) + 2 + len(paragraph) > max_chars:
      pieces.append(current)
      current = paragraph
    else:
      current = f"{current}\n\n{paragraph}" if current else paragraph
  if current:
    pieces.append(current)
  return [p.strip() for p in pieces if len(p.strip()) >= MIN_DOCUMENT_CHARS]


def pydoc_topics() -> Iterator[tuple[str, str]]:
  from pydoc_data import topics
  for name in sorted(topics.topics):
    yield f"pydoc_topics/{name}", topics.topics[name]


def _module_docstrings(path: str, module: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return ""
  parts = []
  module_doc = ast.get_docstring(tree)
  if module_doc:
    parts.append(module_doc)

  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        name = f"{prefix}{child.name}"
        doc = ast.get_docstring(child)
        if doc and len(doc) > 80 and not child.name.startswith("_"):
          parts.append(f"{module}.{name}\n\n{doc}")
        if isinstance(child, ast.ClassDef):
          visit(child, f"{name}.")

  visit(tree, "")
  return "\n\n".join(parts)


def stdlib_docstrings() -> Iterator[tuple[str, str]]:
  root = sysconfig.get_paths()["stdlib"]
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    for filename in sorted(filenames):
      if not filename.endswith(".py"):
        continue
      path = os.path.join(dirpath, filename)
      module = os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")
      text = _module_docstrings(path, module)
      if text:
        yield f"stdlib_docstrings/{module}", text


def text_files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
  import tensorflow as tf  # gfile: local paths and buckets alike
  for pattern in paths:
    matches = sorted(tf.io.gfile.glob(pattern))
    if not matches:
      raise FileNotFoundError(f"text corpus: no file matches {pattern!r}")
    for path in matches:
      with tf.io.gfile.GFile(path, "r") as f:
        yield path, f.read()


def _chunked(sources: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
  for source_id, text in sources:
    for k, piece in enumerate(chunk(text)):
      yield f"{source_id}#{k}", piece


@functools.lru_cache(maxsize=1)
def _python_documents() -> tuple[tuple[str, str], ...]:
  # Parsing the stdlib takes seconds; the result only depends on the running Python.
  return tuple(_chunked(pydoc_topics())) + tuple(_chunked(stdlib_docstrings()))


def documents(files: Optional[Sequence[str]] = None) -> Iterator[tuple[str, str]]:
  """(doc_id, text) chunks of the corpus (`files`, or the one shipped with Python), in a fixed order."""
  if files:
    yield from _chunked(text_files(files))
  else:
    yield from _python_documents()


def split_of(doc_id: str) -> str:
  """'validation' for a stable VALIDATION_PERCENT of documents (by a hash of the id), else 'train'."""
  h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "big")
  return "validation" if h % 100 < VALIDATION_PERCENT else "train"
