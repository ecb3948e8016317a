"""Interactive work: dill-style module dumps (modules) and the IPython magics
(ipython, loaded with ``%load_ext torpor``)."""

from .modules import (CodeDescriptor, SavedFile, default_path, dump_module, dump_session,
                      load_module, load_module_asdict, load_session)

__all__ = ["dump_module", "load_module", "load_module_asdict", "dump_session", "load_session",
           "CodeDescriptor", "SavedFile", "default_path"]
