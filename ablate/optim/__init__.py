"""Memory-efficient optimizers with component switches, usable with or without the runner."""

from .adafactor import Adafactor
from .adalomo import AdaLomo
from .adam_mini import AdamMini
from .adamw import AdamW
from .adamw8bit import AdamW8bit
from .apollo import Apollo
from .galore import GaLoreAdamW
from .lomo import Lomo
from .muon import Muon
from .sgd import SGD

__all__ = ["Adafactor", "AdaLomo", "AdamMini", "AdamW", "AdamW8bit", "Apollo", "GaLoreAdamW",
           "Lomo", "Muon", "SGD"]
