"""The multi-member training engine, one module per job (`rl_align.train` drives it).

- `config`: the engine config's defaults and validation.
- `optimizer`: the members' optimizer (per-member learning rate, momentum, weight decay).
- `layout`: how members run on the devices (lift, conv implementation, devices, micro-batch).
- `feed`: the host-feed interface the engine trains from, and the pieces a run is cut into.
- `core`: the compiled program (`Member`: one member's step loop; `Engine`: lifted and sharded).
- `checkpoint`: orbax checkpoints of the state, and where they live.
- `records`: each call's metrics and snapshots, eval batches, event steps.

Seeds, members and random labels live in `rl_align.seeds` (shared with `rl_align.pipeline`).
"""
