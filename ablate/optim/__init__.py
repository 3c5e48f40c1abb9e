"""Memory-efficient optimizers with component switches, usable with or without the runner."""

from .adalomo import AdaLomo
from .adamw import AdamW
from .apollo import Apollo
from .galore import GaLoreAdamW
from .lomo import Lomo
from .sgd import SGD

__all__ = ["AdaLomo", "AdamW", "Apollo", "GaLoreAdamW", "Lomo", "SGD"]
