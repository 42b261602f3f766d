"""The run layer: what training, evaluation, prediction and the GAN share.

A *run* is one folder (``folder``: held by a lock, ``config.json`` first, ``finished.json``
last), written whole-or-nothing (``atomic``), trained under a ``tf.distribute`` strategy
(``strategy``), on the data of one *task* (``tasks``: the table of tasks and the ``RunData``
protocol; ``ham10000`` and ``photos``: each task's run data; ``datasets``: their ``tf.data``
pipelines). ``dermnet.training`` builds on it and nothing here imports ``dermnet.training``.
"""
