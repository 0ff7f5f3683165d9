"Callback-composed optimizers for PyTorch and fastai"
__version__ = "0.1.0"

from .core import *
from .callbacks import *
from .optimizers import *
from . import optim
