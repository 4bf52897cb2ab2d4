"""malloc replacements for the benches' processes: which is installed, the environment that preloads it,
and handing its free memory back.

glibc's malloc serves every buffer over 32 MB (its largest mmap threshold) with a fresh mmap and
unmaps it when freed, so each train step of either framework page-faults its large activations in
again, and more after an idle gap (this VM returns freed pages to its host). tcmalloc and jemalloc
keep freed memory for reuse, as Intel's guide for PyTorch on Xeon recommends; so does glibc itself
told never to mmap (`glibc_heap`: one arena grown with brk, never trimmed), with nothing to install.
Measured on gato_79m's step at batch 4 x 1024, one process alone (bench/allocator_probe.py,
bench/results/allocator_probe.md): glibc as it comes 21.5 s at best back to back, 25.5 after 20 s
idle; glibc_heap 13.7 and 13.9 (13.8 GB peak resident, as glibc's); tcmalloc 12.9 and 13.3 (24.1
GB); jemalloc (60 s decay) 17.9 and 27.0. In bench/peer_torch.py's groups, a
JAX row whose memory was handed back between turns (release_free_memory) grew past 19-22 GB in its
next turn with glibc_heap and with tcmalloc alike, and the kernel killed it on this 24 GB machine.
"""

import ctypes
import gc
import os
import time

# name -> (library to preload or None, environment, Debian package).
ALLOCATORS = {
    "glibc_heap": (None, {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                          "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}, None),
    "tcmalloc": ("libtcmalloc_minimal.so.4", {}, "libtcmalloc-minimal4"),
    "jemalloc": ("libjemalloc.so.2", {"MALLOC_CONF": "dirty_decay_ms:60000,muzzy_decay_ms:60000"}, "libjemalloc2"),
}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find(name: str) -> str | None:
  """The path of allocator `name`'s library ("libc" for glibc's own), or None where it is not installed."""
  library = ALLOCATORS[name][0]
  if library is None:
    return "libc"
  return next((os.path.join(d, library) for d in LIBRARY_DIRS if os.path.exists(os.path.join(d, library))), None)


def release_free_memory() -> None:
  """Hands the preloaded allocator's free memory back to the kernel (after a row's turn: the rows of a
  group would otherwise all hold their peak at once, more than the machine has)."""
  gc.collect()
  time.sleep(1.0)  # XLA frees a step's temporaries on its own threads, a moment after the step returns
  process = ctypes.CDLL(None)
  if hasattr(process, "MallocExtension_ReleaseFreeMemory"):  # tcmalloc
    process.MallocExtension_ReleaseFreeMemory()
  elif hasattr(process, "mallctl"):  # jemalloc: purge every arena (MALLCTL_ARENAS_ALL = 4096)
    process.mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))
  elif hasattr(process, "malloc_trim"):  # glibc: the heap's top and its free pages
    process.malloc_trim(ctypes.c_size_t(0))


def env(name: str) -> dict:
  """Environment that preloads allocator `name` ("system": none)."""
  if name == "system":
    return {}
  library, variables, _ = ALLOCATORS[name]
  if library is None:
    return dict(variables)
  preload = " ".join(filter(None, [find(name), os.environ.get("LD_PRELOAD", "")]))
  return {"LD_PRELOAD": preload, **variables}
