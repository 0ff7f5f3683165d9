"Callback-composed optimizers for PyTorch and fastai"
__version__ = "0.2.0"

from .chain import *
from .tensorlist import *
from .paths import *
from .optimizer import *
from .callbacks import *
from .optimizers import *
from .registry import *
from .groups import *
from . import optim
