"""The topology registry: decorator, lookup errors, entry-point plugins (real,
out-of-tree, in a fresh interpreter), re-entrant lookups, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_factory import BROKEN_PLUGIN, GOOD_PLUGIN, write_entry_point, write_plugin

import topologies

REPO = Path(__file__).resolve().parents[1]
BUILTINS = {
    "one-to-one",
    "one-to-many",
    "many-to-one",
    "many-to-many-seq2seq",
    "many-to-many-synced",
}


def run_python(code: str, path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(REPO)]), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )


def assert_prints_ok(code: str, path: Path, **env: str) -> None:
    """`code` runs in a fresh interpreter (plugins under `path`) and gets to print OK."""
    result = run_python(code, path, **env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_builtins_are_listed_with_one_line_descriptions():
    listing = topologies.available()
    assert BUILTINS <= set(listing)
    for name in BUILTINS:
        assert listing[name] and "\n" not in listing[name]


def test_aliases_resolve_to_the_same_class():
    assert topologies.get("seq2seq") is topologies.get("many-to-many-seq2seq")
    assert topologies.get("synced") is topologies.get("many-to-many-synced")
    assert topologies.get("m2o") is topologies.get("many-to-one")
    # Names are read case- and separator-blind: "_" is "-".
    assert topologies.get(" Many_To_One ") is topologies.get("many-to-one")


def test_unknown_name_lists_what_is_available():
    with pytest.raises(topologies.TopologyNotFoundError) as err:
        topologies.get("many-to-some")
    assert "many-to-some" in str(err.value)
    for name in BUILTINS:
        assert name in str(err.value)


def test_duplicate_name_raises_unless_override():
    class First(topologies.Topology):
        """First."""

    class Second(topologies.Topology):
        """Second."""

    topologies.register("test-duplicate")(First)
    try:
        with pytest.raises(ValueError, match="already registered"):
            topologies.register("test-duplicate")(Second)
        topologies.register("test-duplicate", override=True)(Second)
        assert topologies.get("test-duplicate") is Second
    finally:
        topologies.unregister("test-duplicate")


def test_register_refuses_a_non_topology():
    with pytest.raises(TypeError, match="subclass of topologies.Topology"):
        topologies.register("not-a-topology")(object)


def test_builtins_use_the_public_decorator():
    source = (REPO / "topologies" / "many_to_one.py").read_text()
    assert '@register("many-to-one"' in source


def test_out_of_tree_plugin_is_listed_and_usable(tmp_path):
    root = write_plugin(
        tmp_path / "site", "meanplugin", "meanplugin", GOOD_PLUGIN, "mean-over-time", "MeanOverTime"
    )
    code = (
        "import numpy as np, topologies, tinygrad_rnn as tr\n"
        "listing = topologies.available()\n"
        "assert 'mean-over-time' in listing, listing\n"
        "print('DESC', listing['mean-over-time'])\n"
        "topo = topologies.create('mean-over-time')\n"
        "assert isinstance(topo, topologies.get('many-to-one'))\n"
        "spec = topologies.ModelSpec(cell='gru', hidden_size=4, input_size=1)\n"
        "model = topo.build(spec)\n"
        "x = np.random.default_rng(0).standard_normal((3, 5, 1)).astype(np.float32)\n"
        "out = topo.loss(model, x, np.zeros((3, 1), np.float32))\n"
        "out.loss.backward()\n"
        "print('LOSS', out.loss.item())\n"
    )
    result = run_python(code, root)
    assert result.returncode == 0, result.stderr
    assert "DESC Many-to-one variant scoring the time-average" in result.stdout
    assert "LOSS" in result.stdout


def test_broken_plugin_is_skipped_with_a_warning(tmp_path):
    root = write_plugin(
        tmp_path / "site", "brokenplugin", "brokenplugin", BROKEN_PLUGIN, "broken-topology", "Thing"
    )
    code = "import topologies\nprint(sorted(topologies.available()))\n"
    result = run_python(code, root)
    assert result.returncode == 0, result.stderr
    assert "broken-topology" in result.stderr and "skipped" in result.stderr
    assert "many-to-one" in result.stdout


def test_broken_plugin_is_an_error_in_strict_mode(tmp_path):
    root = write_plugin(
        tmp_path / "site", "brokenplugin", "brokenplugin", BROKEN_PLUGIN, "broken-topology", "Thing"
    )
    code = "import topologies\ntopologies.available()\n"
    result = run_python(code, root, TINYGRAD_RNN_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "PluginLoadError" in result.stderr and "broken-topology" in result.stderr


def test_unknown_topology_option_is_refused():
    with pytest.raises(ValueError, match="no option"):
        topologies.create("seq2seq", peeky=True, bogus=1)


def test_overriding_a_name_that_is_an_alias_moves_it_for_lookups_and_listing_alike(tmp_path):
    code = (
        "import topologies\n"
        "@topologies.register('seq2seq', override=True)\n"
        "class Mine(topologies.Topology):\n"
        "    '''Mine.'''\n"
        "builtin = topologies.get('many-to-many-seq2seq')\n"
        "assert topologies.get('seq2seq') is Mine, topologies.get('seq2seq')\n"
        "assert topologies.available()['seq2seq'] == 'Mine.'\n"
        "assert 'seq2seq' not in builtin.aliases, builtin.aliases\n"
        "print('OK')\n"
    )
    assert_prints_ok(code, tmp_path)


def test_a_plugin_naming_a_builtin_class_adds_an_alias_and_never_renames_it(tmp_path):
    """Checkpoints store a topology's name: a plugin must not change a built-in's."""
    root = write_entry_point(tmp_path / "site", "lmalias", "lm", "topologies.synced:Synced")
    code = (
        "import topologies\n"
        "from topologies.synced import Synced\n"
        "listing = topologies.available()\n"
        "assert topologies.get('lm') is Synced\n"
        "assert Synced.name == 'many-to-many-synced', Synced.name\n"
        "assert set(Synced.aliases) == {'synced', 'lm'}, Synced.aliases\n"
        "assert 'lm' not in listing and topologies.create('synced').name == Synced.name\n"
        "print('OK')\n"
    )
    assert_prints_ok(code, root)


def write_slow_plugin(root: Path, seconds: float) -> Path:
    """The mean-over-time plugin, in a module `slowplugin` whose import takes `seconds`."""
    slow = f"import time\ntime.sleep({seconds})\n" + GOOD_PLUGIN
    return write_plugin(root, "slowplugin", "slowplugin", slow, "mean-over-time", "MeanOverTime")


def test_a_lookup_from_another_thread_waits_for_plugin_discovery(tmp_path):
    root = write_slow_plugin(tmp_path / "site", seconds=1.0)
    code = (
        "import threading, time, topologies\n"
        "threading.Thread(target=topologies.available).start()\n"
        "time.sleep(0.3)  # discovery is loading the slow plugin now\n"
        "print(topologies.get('mean-over-time').__name__)\n"
    )
    result = run_python(code, root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MeanOverTime"


def test_a_plugin_imported_directly_while_another_thread_discovers_does_not_deadlock(tmp_path):
    """The module looks up a built-in at import; discovery, in another thread, imports the
    same module and waits for its import lock: the lookup must not wait for discovery."""
    root = write_slow_plugin(tmp_path / "site", seconds=0.5)
    code = (
        "import threading, time, topologies\n"
        "def listing():\n"
        "    time.sleep(0.1)  # the main thread is importing the plugin module now\n"
        "    print('listed', 'mean-over-time' in topologies.available(), flush=True)\n"
        "thread = threading.Thread(target=listing)\n"
        "thread.start()\n"
        "import slowplugin\n"
        "thread.join()\n"
        "print('imported', slowplugin.MeanOverTime.__name__)\n"
    )
    result = run_python(code, root)
    assert result.returncode == 0, result.stderr
    assert "listed True" in result.stdout and "imported MeanOverTime" in result.stdout


def test_unregister_removes_the_aliases_too():
    """unregister drops a topology and every alias of it: an alias left behind would point
    at the canonical name, so the next class registered under that name (a plugin reload,
    another test) would silently answer to the old aliases too, and list them as its own."""

    class Old(topologies.Topology):
        """Old."""

    class New(topologies.Topology):
        """New."""

    topologies.register("test-unregister", aliases=("test-unregister-alias",))(Old)
    assert topologies.get("test-unregister-alias") is Old
    topologies.unregister("test-unregister")
    with pytest.raises(topologies.TopologyNotFoundError):
        topologies.get("test-unregister-alias")
    topologies.register("test-unregister")(New)
    try:
        assert New.aliases == ()
        with pytest.raises(topologies.TopologyNotFoundError):
            topologies.get("test-unregister-alias")
    finally:
        topologies.unregister("test-unregister")
