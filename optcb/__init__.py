"Callback-composed optimizers for PyTorch and fastai"
__version__ = "0.2.0"

from .chain import *
from .tensorlist import *
from .paths import *
from .checkpoints import *
from .fastai_api import *
from .precision import *
from .release import *
from .hyperparams import *
from .routes import *
from .modes import *
from .optimizer import *
from .callbacks import *
from .optimizers import *
from .registry import *
from .groups import *
from . import optim

# fastai's Learner switches the train/eval point of schedule-free optimizers once fastai is imported: optcb.learner
# (which imports fastai) is imported right after fastai.learner, whichever of fastai and optcb comes first
import importlib.abc as _abc, importlib.util as _util, sys as _sys

class _AfterImport(_abc.MetaPathFinder):
    "A finder that lets the usual finders find `name`, then runs `fn` once that module has been executed"
    def __init__(self, name, fn): self.name, self.fn = name, fn
    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name: return None
        _sys.meta_path.remove(self)
        spec = _util.find_spec(fullname)
        if spec is None or spec.loader is None: return spec
        exec_module, fn = spec.loader.exec_module, self.fn
        def exec_then_run(module):
            exec_module(module)
            fn()
        spec.loader.exec_module = exec_then_run
        return spec

def _register_learner_glue(): import optcb.learner

if 'fastai.learner' in _sys.modules: _register_learner_glue()
elif not any(isinstance(f, _AfterImport) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _AfterImport('fastai.learner', _register_learner_glue))
