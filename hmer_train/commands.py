"""Console entry points of the training commands: each imports its module inside ``launch``, so
that an install without the ``train`` extra gets one line naming it."""

from hmer_runtime.cli_util import launch


def data() -> None:
    launch("hmer_train.cli_data")


def train() -> None:
    launch("hmer_train.cli_train")


def evaluate() -> None:
    launch("hmer_train.cli_eval")


def checkpoint() -> None:
    launch("hmer_train.cli_checkpoint")
