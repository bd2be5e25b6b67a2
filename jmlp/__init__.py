"""jmlp: a functional JAX framework for training multilayer perceptrons."""

from .activations import ACTIVATIONS as ACTIVATIONS
from .activations import get_activation as get_activation
from .check import GradCheckReport as GradCheckReport
from .check import check_grad as check_grad
from .errors import JmlpError as JmlpError
from .fit import FitResult as FitResult
from .fit import fit as fit
from .gradients import autodiff_grad as autodiff_grad
from .gradients import backward as backward
from .gradients import grad_fn as grad_fn
from .gradients import loss_fn as loss_fn
from .gradients import manual_grad as manual_grad
from .losses import LOSSES as LOSSES
from .losses import get_loss as get_loss
from .model import MLP as MLP
from .optim import OPTIMIZERS as OPTIMIZERS
from .optim import make_optimizer as make_optimizer
from .optim import set_learning_rate as set_learning_rate
from .step import Step as Step
from .sweep import Sweep as Sweep
from .sweep import SweepResult as SweepResult
from .sweep import sweep as sweep

__version__ = "0.1.0"
