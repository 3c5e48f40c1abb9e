"""Memory-efficient optimizers with component switches, usable with or without the runner."""

from .adalomo import AdaLomo
from .adam_mini import AdamMini
from .adamw import AdamW
from .apollo import Apollo
from .galore import GaLoreAdamW
from .lomo import Lomo
from .muon import Muon
from .sgd import SGD

__all__ = ["AdaLomo", "AdamMini", "AdamW", "Apollo", "GaLoreAdamW", "Lomo", "Muon", "SGD"]
