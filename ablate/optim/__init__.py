"""Memory-efficient optimizers with component switches, usable with or without the runner."""

from .galore import GaLoreAdamW

__all__ = ["GaLoreAdamW"]
