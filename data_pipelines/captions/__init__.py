"""Image-text pairs made locally: rendered coloured shapes with generated captions and their ground truth."""

from data_pipelines.captions.builder import CaptionsBuilder

