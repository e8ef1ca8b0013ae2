"""The multi-member training engine, one module per job (`rl_align.train` drives it).

- `config`: the engine config's defaults and validation.
- `optimizer`: the members' optimizer (per-member learning rate, momentum, weight decay).
- `layout`: how members run on the devices (lift, conv implementation, devices, micro-batch).
- `feed`: the host-feed interface the engine trains from, and the pieces a run is cut into.
- `programs`: the compiled programs (`Member`: one member's step loop and evaluation; `Engine`:
  them lifted over the members and sharded over the devices).
- `grouping`: which calls run as one program.
- `checkpoint`: orbax checkpoints of the state, and where they live (the last two; a damaged one
  falls back to the other).
- `records`: each call's metrics (to its metric writer) and snapshots, eval batches, event steps.

Seeds, members and random labels live in `rl_align.seeds` (shared with `rl_align.pipeline`).
"""
