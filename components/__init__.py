"""mmflow.components: the domain (data, models, balancing methods, tasks).

Importing this package registers the built-in components (the `mmflow.components` entry
point points here). Modules imported here must stay light: pydantic only, no torch.
"""

from .data import shard, synthetic
from .tasks import classification

__all__ = ["classification", "shard", "synthetic"]
