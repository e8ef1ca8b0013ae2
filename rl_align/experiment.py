"""Moved: the workdir's config check is `rl_align.runners.common.check_workdir_config`.

This name stays only until experiments/cli.py imports it from there; then this file goes.
"""
from rl_align.runners.common import check_workdir_config  # pylint: disable=unused-import
