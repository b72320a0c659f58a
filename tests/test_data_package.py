"""The data layer's ground rules, read from its source: numpy only, no global RNG."""

import ast
import pathlib
import re
import sys

import tinygrad_rnn.data as data

DATA_DIR = pathlib.Path(data.__file__).parent
SOURCES = sorted(DATA_DIR.glob("*.py"))
ALLOWED_THIRD_PARTY = {"numpy", "pooch"}  # pooch only lazily, for downloads


def test_the_data_layer_imports_only_numpy_pooch_and_the_standard_library():
    assert SOURCES
    for source in SOURCES:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # Relative imports must stay inside the data package (level 1).
                assert node.level in (0, 1), f"{source.name} imports from above the data layer"
                names = [] if node.level else [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                    f"{source.name} imports {name}"
                )


def test_the_data_layer_never_uses_numpy_global_rng():
    # Only Generator construction is allowed; np.random.seed/rand/permutation/... are not.
    allowed = {"default_rng", "Generator"}
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        for name in re.findall(r"np\.random\.(\w+)", text):
            assert name in allowed, f"{source.name} uses np.random.{name}"


def test_every_exported_name_exists():
    for name in data.__all__:
        assert hasattr(data, name), name
