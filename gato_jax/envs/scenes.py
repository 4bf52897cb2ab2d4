"""Rendered scenes of coloured shapes with a caption generated from the ground truth.

A scene holds one or two groups of identical objects (a colour, a shape, a count of 1-3), each object
in its own cell of a 4x4 grid of 16x16 cells over a 64x64 image (so an object sits in about one image
patch), with a random size and offset inside its cell, on a dark background. The caption names every
group in a random order: "a red circle and two blue squares".
"""

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 100, 235),
    "yellow": (235, 210, 40), "purple": (160, 70, 210), "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
BACKGROUND = (24, 24, 24)


@dataclasses.dataclass(frozen=True)
class Group:
  color: str
  shape: str
  count: int

  def phrase(self) -> str:
    noun = self.shape if self.count == 1 else f"{self.shape}s"
    return f"{COUNT_WORDS[self.count]} {self.color} {noun}"


def caption(groups) -> str:
  return " and ".join(g.phrase() for g in groups)


def sample_groups(rng: np.random.Generator) -> list[Group]:
  """One or two groups with distinct (colour, shape)."""
  num_groups = int(rng.integers(1, 3))
  kinds = [(c, s) for c in COLORS for s in SHAPES]
  picked = rng.choice(len(kinds), size=num_groups, replace=False)
  return [Group(*kinds[i], int(rng.integers(1, 4))) for i in picked]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color):
  x0, y0, x1, y1 = box
  if shape == "circle":
    draw.ellipse(box, fill=color)
  elif shape == "square":
    draw.rectangle(box, fill=color)
  elif shape == "triangle":
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)
  else:
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(groups, rng: np.random.Generator) -> np.ndarray:
  """uint8 [64, 64, 3]: every object of every group in a distinct random cell."""
  total = sum(g.count for g in groups)
  if total > GRID * GRID:
    raise ValueError(f"{total} objects do not fit in a {GRID}x{GRID} grid")
  image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
  draw = ImageDraw.Draw(image)
  cells = rng.permutation(GRID * GRID)[:total]
  objects = [g for g in groups for _ in range(g.count)]
  for group, cell in zip(objects, cells):
    size = int(rng.integers(9, 15))
    x = (cell % GRID) * CELL + int(rng.integers(0, CELL - size + 1))
    y = (cell // GRID) * CELL + int(rng.integers(0, CELL - size + 1))
    _draw(draw, group.shape, (x, y, x + size - 1, y + size - 1), COLORS[group.color])
  return np.asarray(image, np.uint8)


def sample_scene(rng: np.random.Generator) -> tuple[np.ndarray, str, list[Group]]:
  groups = sample_groups(rng)
  rng.shuffle(groups)  # the caption's order is random too
  return render(groups, rng), caption(groups), groups
