"""The built-in balancing methods, one module (or package) each: importing this package registers every one
(the `mmflow.methods` entry point points here), so adding a method adds a module and edits nothing else."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
