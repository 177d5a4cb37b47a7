"""Engine: compiled train/eval steps and the ``Trainer`` loop over them.

Example:
    >>> from mlxvision.engine import Trainer, make_train_step, make_eval_step, cross_entropy
"""

from .losses import cross_entropy
from .steps import make_eval_step, make_train_step
from .trainer import Trainer, epoch_summary

__all__ = ["Trainer", "cross_entropy", "epoch_summary", "make_eval_step", "make_train_step"]
