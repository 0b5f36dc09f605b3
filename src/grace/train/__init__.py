"""Training: one loop for SFT, QAT, KD and GRACE on ``accelerate`` (GRACE.md §1-8).

    from grace.train import TrainConfig, train
    cfg = TrainConfig.from_yaml("recipes/grace_w4.yaml", overrides=["max_steps=100"])
    result = train(cfg)                                   # models and data from the recipe
    result = train(cfg, student=s, teacher=t, dataset=ds, tokenizer=tok, save_fn=my_saver)

* :mod:`grace.train.config`     the flat :class:`TrainConfig` (YAML recipes, ``--set`` overrides)
* :mod:`grace.train.loop`       :func:`train` and :class:`TrainResult`
* :mod:`grace.train.schedule`   LR schedule, warm-up ramps, the rank-aware data order
* :mod:`grace.train.checkpoint` atomic checkpoints and resume
* :mod:`grace.train.build`      models / dataset from local directories (the CLI path)
* :mod:`grace.train.plot`       loss and beta curves of a run
"""

from grace.train.config import MODES, ConfigError, TrainConfig
from grace.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "ConfigError", "MODES"]
