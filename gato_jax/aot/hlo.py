"""What a compiled program communicates: its collectives by kind, group size and bytes per step, read
from the optimized HLO text (`compiled.as_text()`).

A collective inside a loop body (the scan over layers, gradient accumulation, a `lax.map`) runs once
per trip, so each computation's count is multiplied along the call graph from ENTRY: a while body by
its trip count (the integer bound its condition compares against), fusions and calls by one. TPU
wraps most collectives in async fusions; the collective instruction inside is what is counted, once.

Bytes are per device: `bytes` is the collective's result buffer (for a reduce-scatter, its input),
and `wire_bytes` what a ring algorithm sends per device: all-gather and reduce-scatter (n-1)/n of the
full buffer, all-reduce twice that, all-to-all (n-1)/n, a permute the buffer itself.
"""

import collections
import dataclasses
import math
import re

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_CALLEES = re.compile(r"\b(calls|to_apply|body|condition|branch_computations|called_computations)="
                      r"(\{[^}]*\}|%?[\w.\-]+)")
_CONSTANT = re.compile(r"\b[su]\d+\[\]\S*\s+constant\((-?\d+)\)")


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str  # one of KINDS
  computation: str
  bytes: int  # per device, per execution (see the module docstring)
  group_size: int  # devices taking part in one group
  count: int  # executions per step (loop trips multiplied in)
  shapes: tuple = ()  # dimensions of each array of its result (XLA combines small ones in tuples)

  @property
  def shape(self) -> tuple:
    return self.shapes[0] if self.shapes else ()

  @property
  def wire_bytes(self) -> float:
    n = max(self.group_size, 1)
    share = (n - 1) / n
    factor = {"all-reduce": 2 * share, "collective-permute": 1.0}.get(self.kind, share)
    full = self.bytes * n if self.kind == "reduce-scatter" else self.bytes
    return factor * full


def _arrays(type_text: str) -> list[float]:
  out = []
  for dtype, dims in _ARRAY.findall(type_text):
    size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
    if size is not None:
      out.append(size * math.prod(int(d) for d in dims.split(",") if d))
  return out


def array_bytes(type_text: str) -> int:
  """Bytes of an HLO result type: one array `f32[2,3]{1,0}` or a tuple of them."""
  return int(sum(_arrays(type_text)))


def group_size(attributes: str, num_devices: int) -> int:
  """Devices per replica group, from any of XLA's three spellings of `replica_groups`."""
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes)
  if mesh:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh[1]))
    axes = re.findall(r"'([^']+)'", mesh[2])
    return math.prod(int(sizes[a]) for a in axes if a in sizes) if axes else num_devices
  iota = re.search(r"replica_groups=\[([\d,]+)\]<=", attributes)
  if iota:
    return int(iota[1].split(",")[-1])
  listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
  if listed:
    return len([d for d in listed[1].split(",") if d])
  pairs = re.search(r"source_target_pairs=\{([^}]*\})", attributes)
  if pairs:
    return 2
  return num_devices


def _parse(text: str):
  """{computation: [(name, type, op, rest)]}, ENTRY's name."""
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    if current is None:
      header = _HEADER.match(line)
      if header:
        current = header[2]
        computations[current] = []
        if header[1]:
          entry = current
      continue
    if line.startswith("}"):
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match:
      computations[current].append(match.groups())
  return computations, entry


def _trip_count(condition) -> int:
  """A while loop's trips: the integer bound its condition compares the counter with (1 if unknown)."""
  bounds = [int(m) for _, type_, op, rest in condition for m in _CONSTANT.findall(f"{type_} {op}({rest}")]
  return max([b for b in bounds if b > 0], default=1)


def _callees(rest: str) -> list[tuple[str, str]]:
  out = []
  for attribute, value in _CALLEES.findall(rest):
    for name in re.findall(r"%?([\w.\-]+)", value.strip("{}")):
      out.append((attribute, name))
  return out


def collectives(text: str, num_devices: int) -> list[Collective]:
  """Every collective of the compiled program with how often it runs per step."""
  computations, entry = _parse(text)
  if entry is None:
    return []
  # multiplicity(c) = sum over its callers of multiplicity(caller) * trips; HLO's call graph is a DAG
  # a few levels deep, so a fixed point comes in as many rounds as it is deep.
  callers = collections.defaultdict(list)
  for name, instructions in computations.items():
    for _, _, op, rest in instructions:
      links = _callees(rest)
      trips = 1
      if op == "while":
        condition = next((c for a, c in links if a == "condition"), None)
        trips = _trip_count(computations.get(condition, []))
      for attribute, callee in links:
        if callee in computations:
          callers[callee].append((name, trips if attribute in ("body", "condition") else 1))
  multiplicity = collections.Counter({entry: 1})
  for _ in range(len(computations)):
    changed = False
    for name in computations:
      value = 1 if name == entry else sum(multiplicity[c] * trips for c, trips in callers[name])
      if value != multiplicity[name]:
        multiplicity[name], changed = value, True
    if not changed:
      break
  # One logical collective may appear several times: TPU splits an async collective into a start, its
  # continuations threaded through the loop that overlaps it, and a done, all copies of one channel.
  # It runs as often as its least repeated copy (a gather started before a loop and finished after it
  # runs once, not once per trip).
  copies = {}
  for name, instructions in computations.items():
    if not multiplicity[name]:
      continue
    for instruction, type_, op, rest in instructions:
      kind = op[:-len("-start")] if op.endswith("-start") else op
      if kind not in KINDS:
        continue
      size = array_bytes(type_)
      if op.endswith("-start") and type_.startswith("("):
        size //= 2  # async start results hold (operand, result)
      if kind == "all-reduce" and name.startswith("all-reduce-scatter"):
        # TPU's reduce-scatter: a fusion of the all-reduce and this device's slice of its result.
        kind, size = "reduce-scatter", size // max(group_size(rest, num_devices), 1)
      channel = re.search(r"channel_id=(\d+)", rest)
      key = ("channel", channel[1]) if channel else ("instruction", name, instruction)
      shapes = tuple(tuple(int(d) for d in dims.split(",") if d) for _, dims in _ARRAY.findall(type_))
      item = Collective(kind, name, size, group_size(rest, num_devices), multiplicity[name], shapes)
      if key not in copies or item.count < copies[key].count:
        copies[key] = item
  return list(copies.values())


def largest_buffers(text: str, k: int = 5) -> list[tuple[int, str, str]]:
  """The `k` biggest arrays the program materialises in HBM, [(bytes, type, op name)]: results of the
  instructions of ENTRY and of loop bodies (not those inside fusions, which never reach memory)."""
  computations, entry = _parse(text)
  bodies = {entry} | {callee for instructions in computations.values() for _, _, op, rest in instructions
                      if op == "while" for attribute, callee in _callees(rest) if attribute == "body"}
  found = {}
  for name in bodies:
    for _, type_, op, rest in computations.get(name, []):
      if type_.startswith("(") or op in ("parameter", "bitcast", "get-tuple-element", "tuple", "constant"):
        continue
      label = re.search(r'op_name="([^"]*)"', rest)
      key = (type_.split("{")[0], (label[1] if label else op)[-80:])
      found[key] = array_bytes(type_)
  return sorted(((size, t, o) for (t, o), size in found.items()), reverse=True)[:k]


def summarize(items: list[Collective]) -> dict[str, dict]:
  """{kind: {ops, executions, bytes, wire_bytes}} per step and device."""
  out = {}
  for kind in KINDS:
    chosen = [c for c in items if c.kind == kind]
    if chosen:
      out[kind] = {"ops": len(chosen), "executions": sum(c.count for c in chosen),
                   "bytes": sum(c.bytes * c.count for c in chosen),
                   "wire_bytes": sum(c.wire_bytes * c.count for c in chosen),
                   "group_sizes": sorted({c.group_size for c in chosen})}
  return out
