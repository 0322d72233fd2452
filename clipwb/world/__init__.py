"""The embedded world: procedurally generated, captioned images with a manifest of every factor."""
from .generator import BACKGROUNDS, OTHER_WORDS, KINDS, MIX_KINDS, OBJECT_COLORS, SPLITS, World, WorldBatch, WorldConfig
from .portraits import GENDERS, OCCUPATIONS, STEREOTYPE
from .shapes import OBJECT_CLASSES
from .text import TEXT_COLORS, render_text

__all__ = ["World", "WorldConfig", "WorldBatch", "OBJECT_CLASSES", "GENDERS", "OCCUPATIONS", "STEREOTYPE",
           "KINDS", "MIX_KINDS", "OTHER_WORDS", "SPLITS", "BACKGROUNDS", "OBJECT_COLORS", "TEXT_COLORS", "render_text"]
