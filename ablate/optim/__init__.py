"""Memory-efficient optimizers with component switches, usable with or without the runner."""

from .adafactor import Adafactor
from .adalomo import AdaLomo
from .adamw import AdamW
from .adamw8bit import AdamW8bit
from .galore import GaLoreAdamW
from .lomo import Lomo
from .sgd import SGD

__all__ = ["Adafactor", "AdaLomo", "AdamW", "AdamW8bit", "GaLoreAdamW", "Lomo", "SGD"]
