"""Console entry points of ``hmer-export`` and ``hmer-bench``: each imports its module inside
``launch``, so that an install without the ``train`` extra gets one line naming it."""

from hmer_runtime.cli_util import launch


def export() -> None:
    launch("hmer_export.cli")
