"""Builds real out-of-tree topology plugins for the tests: a package plus a
`*.dist-info` folder with `entry_points.txt`, on a folder meant for sys.path."""

from __future__ import annotations

import textwrap
from pathlib import Path

GOOD_PLUGIN = '''
"""An out-of-tree topology: many-to-one that scores the mean of all steps."""
import topologies
from topologies.base import StepOutput, targets_like

# Looked up while this module is being loaded by entry-point discovery: re-entrant.
ManyToOne = topologies.get("many-to-one")


class MeanOverTime(ManyToOne):
    """Many-to-one variant scoring the time-average of the recurrent outputs."""

    def last_step(self, model, inputs, state=None):
        out, _ = model.features(inputs, state)
        return model.head(out.mean(axis=1))
'''

BROKEN_PLUGIN = """
raise ImportError("this plugin is broken on purpose")
"""


def write_plugin(
    root: Path, dist: str, module: str, source: str, entry_name: str, attr: str
) -> Path:
    """Write `module.py` and `dist-0.1.dist-info/` registering `entry_name` -> module:attr."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    return write_entry_point(root, dist, entry_name, f"{module}:{attr}")


def write_entry_point(root: Path, dist: str, entry_name: str, target: str) -> Path:
    """Write `dist-0.1.dist-info/` registering the topology `entry_name` -> `target`
    ("module:attr", of any importable module)."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tinygrad_rnn.topologies]\n{entry_name} = {target}\n")
    return root
