"""The experiment runners: orchestration of the figures' experiments (data, engine, resume, plots).

One module per experiment (`eigenmap`, `filters`, `transfer`, `specialization`) plus `common`, the
pieces they share.  The pure analysis they call lives in the library modules of the same names
(`rl_align.eigenmap`, ...), which import neither runners nor plots::

    from rl_align.runners import transfer
    out = transfer.run(config, workdir)

A runner is a generator of its engine calls (`res = yield train.call(...)`, decorated with
`train.driven`): `transfer.run(...)` runs it alone, `transfer.run.steps(...)` is the generator a
sweep advances in lockstep with its other points to pack their calls (`rl_align.packing`).
"""
