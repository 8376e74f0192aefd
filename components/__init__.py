"""mmflow.components: the domain (data, models, balancing methods, tasks).

Importing this package registers the built-in components (the `mmflow.components` entry
point points here). Modules imported here must stay light: pydantic only, no torch.
"""

from .data import ave, cg_mnist, cremad, kinetics_sounds, shard, synthetic
from .report import compare
from .tasks import classification, gblend_estimate

__all__ = ["ave", "cg_mnist", "classification", "compare", "cremad", "gblend_estimate", "kinetics_sounds", "shard",
           "synthetic"]
