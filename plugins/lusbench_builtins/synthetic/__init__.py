"""The ``synthetic-lus`` dataset: simulated lung ultrasound with expert confidence and clinical outcomes.

Only the config is imported here; the simulator (numpy, scipy) loads when a dataset is made, so that
registering the plugin stays cheap. The model card is ``docs/synthetic-dataset.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lusbench
from lusbench_builtins.synthetic.config import DATASET_NAME, config_from_args

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset


def make_synthetic_dataset(*args: str, **kwargs: Any) -> LUSDataset:
    """Synthetic lung ultrasound with simulated expert confidence and clinical outcomes (no download).

    Keyword arguments override fields of
    :class:`~lusbench_builtins.synthetic.config.SyntheticConfig` (``patients="40"``, ``size="64"``, ...);
    a bad or unknown argument raises ValueError naming its key.
    """
    config = config_from_args(*args, **kwargs)
    from lusbench_builtins.synthetic.simulate import simulate

    return simulate(config)


@lusbench.hookimpl
def register_datasets(register: lusbench.api.hookspecs.Register) -> None:
    register(DATASET_NAME, make_synthetic_dataset)
