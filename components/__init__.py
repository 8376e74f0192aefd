"""mmflow.components: the domain (data, models, balancing methods, tasks).

Importing this package registers the built-in components (the `mmflow.components` entry
point points here). Modules imported here must stay light: pydantic only, no torch.
"""

from .data import ave, ave_features, cg_digits, cg_mnist, cremad, events, kinetics_sounds, shard, synthetic
from . import selfcheck
from .report import compare
from .balance.methods.gblend import estimate_step as gblend_estimate
from .tasks import classification, localization

__all__ = ["ave", "ave_features", "cg_digits", "cg_mnist", "classification", "compare", "cremad", "events",
           "gblend_estimate", "kinetics_sounds", "localization", "selfcheck", "shard", "synthetic"]
