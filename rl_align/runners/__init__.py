"""The experiment runners: orchestration of the figures' experiments (data, engine, resume, plots).

One module per experiment (`eigenmap`, `filters`, `transfer`, `specialization`) plus `common`, the
pieces they share.  The pure analysis they call lives in the library modules of the same names
(`rl_align.eigenmap`, ...), which import neither runners nor plots::

    from rl_align.runners import transfer
    out = transfer.run(config, workdir)
"""
