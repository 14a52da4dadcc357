"""The package's layers import only downward (the import arrows point one way), checked by parsing every module's
imports (lazy ones inside functions included) with ``ast``; and no module imports itself back
through a chain of imports."""
import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maskdiff"

# layer -> (the modules it holds, the layers it may import besides its own). Bottom up.
LAYERS = {
    "errors": (["maskdiff.errors"], []),
    "config": (["maskdiff.config", "maskdiff.presets"], ["errors"]),
    "math": (["maskdiff.schedules", "maskdiff.process", "maskdiff.denoiser", "maskdiff.exact", "maskdiff.loss", "maskdiff.sampling"],
             ["errors"]),
    "networks": (["maskdiff.networks"], []),
    "hf": (["maskdiff.hf"], ["networks"]),  # imports transformers: only a user's `import maskdiff.hf` loads it
    "io": (["maskdiff.checkpoint", "maskdiff.distributed", "maskdiff.visualize", "maskdiff.sharded", "maskdiff.plotting"], ["errors"]),
    "estimate": (["maskdiff.evaluation.nelbo"], ["errors", "math"]),
    "data": (["maskdiff.data"], ["errors", "io"]),
    "tasks": (["maskdiff.tasks"], ["errors"]),
    "modalities": (["maskdiff.modalities"], ["errors", "config", "math", "data"]),
    "objectives": (["maskdiff.objectives"], ["errors", "config", "math", "networks"]),
    "runs": (["maskdiff.runs"], ["errors", "config", "io", "data"]),
    "model": (["maskdiff.pipeline", "maskdiff.validation", "maskdiff.completion", "maskdiff.pretrained", "maskdiff.convert", "maskdiff.convert_md4",
               "maskdiff.warm_start", "maskdiff.network_runtime"],
              ["errors", "config", "math", "io", "estimate", "data", "modalities", "objectives", "runs"]),
    "api": (["maskdiff"], ["errors", "math", "model"]),
    "train": (["maskdiff.train", "maskdiff.step", "maskdiff.train_state", "maskdiff.monitor", "maskdiff.monitor_sinks"], ["errors", "config", "math", "io", "estimate", "modalities", "objectives", "runs", "model"]),
    "plan": (["maskdiff.plan"], ["errors", "config", "networks", "objectives"]),
    "distill": (["maskdiff.distill"], ["errors", "config", "math", "io", "modalities", "objectives", "runs", "train"]),
    "evaluation": (["maskdiff.evaluation"],
                   ["errors", "config", "math", "networks", "io", "estimate", "data", "modalities", "objectives", "model", "api"]),
    "experiments": (["maskdiff.experiments"],
                    ["errors", "config", "math", "io", "estimate", "data", "modalities", "objectives", "model", "api", "train", "evaluation",
                     "tasks", "runs", "distill"]),
    "serve": (["maskdiff.serve"], ["errors", "config", "math", "io", "modalities", "objectives", "model", "api"]),
    "cli": (["maskdiff.cli"], [name for name in ["errors", "config", "math", "networks", "io", "estimate", "data", "modalities",
                                                "objectives", "runs", "model", "api", "train", "evaluation", "experiments", "serve",
                                                "plan", "tasks", "distill"]]),
}


def module_name(path: Path) -> str:
    parts = ("maskdiff",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module a ``from`` import names, relative imports (``from .layers import x``) resolved."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path):
    """Every maskdiff module that ``path`` imports, at the top or inside a function (relative imports too)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            node.module = absolute(node, path)
            yield node.module
            for a in node.names:  # `from maskdiff.data import subword` imports the module maskdiff.data.subword
                if f"{node.module}.{a.name}" in MODULES:
                    yield f"{node.module}.{a.name}"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str:
    """The layer whose longest module prefix holds ``module``."""
    best = max(((len(p), layer) for layer, (prefixes, _) in LAYERS.items() for p in prefixes if _within(module, p)), default=None)
    assert best is not None, f"{module} belongs to no layer; add it to LAYERS"
    return best[1]


@functools.lru_cache(maxsize=None)
def graph():
    """module -> the maskdiff modules it imports (parsed once per session; read-only)."""
    return {m: sorted({i for i in imports(p) if i in MODULES and i != m}) for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layer_imports_only_what_it_may(module):
    layer = layer_of(module)
    allowed = {layer, *LAYERS[layer][1]}
    bad = [i for i in graph()[module] if layer_of(i) not in allowed]
    assert not bad, f"{module} (layer {layer}) imports {[(b, layer_of(b)) for b in bad]}; it may import: {sorted(allowed)}"


def test_layers_are_listed_bottom_up():
    order = list(LAYERS)
    for layer, (_, below) in LAYERS.items():
        assert all(order.index(b) < order.index(layer) for b in below), layer


def test_no_import_cycle():
    edges = graph()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in edges[m]:
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_config_is_a_leaf():
    assert graph()["maskdiff.config"] == ["maskdiff.errors"]


def test_run_folders_are_read_and_written_below_the_trainer_and_the_loader():
    """maskdiff.runs is the one module that reads and writes run directories: the trainer and the loader
    both import it, and the trainer reaches neither the loading facade nor the model-folder format."""
    edges = graph()
    assert "maskdiff.runs" in edges["maskdiff.train"] and "maskdiff.runs" in edges["maskdiff.pipeline"]
    assert not {"maskdiff.pipeline", "maskdiff.pretrained", "maskdiff.convert", "maskdiff"} & set(edges["maskdiff.train"])


def test_run_folder_file_names_are_spelled_in_one_module():
    """The trainer, the loader and the demo name no file of a run directory: maskdiff.runs does (and
    maskdiff.checkpoint the checkpoints' folder)."""
    names = {"config.json", "tokenizer.json", "log.jsonl", "checkpoints"}

    def spelled(module):
        return {n.value for n in ast.walk(ast.parse(MODULES[module].read_text())) if isinstance(n, ast.Constant) and n.value in names}

    for module in ("maskdiff.train", "maskdiff.pipeline", "maskdiff.cli.demo"):
        assert not spelled(module), f"{module} spells {spelled(module)}; use the constants of maskdiff.runs"
    assert spelled("maskdiff.runs") == {"config.json", "tokenizer.json", "log.jsonl"}
    assert spelled("maskdiff.checkpoint") == {"checkpoints"}


def test_config_checks_only_check():
    """validate_config returns nothing (what a config implies is filled in before, by maskdiff.completion)."""
    import inspect

    from maskdiff import validation

    assert inspect.signature(validation.validate_config).return_annotation in (None, "None")


def test_math_layer_imports_no_config_data_train_or_networks():
    for module in MODULES:
        if layer_of(module) == "math":
            assert all(layer_of(i) in ("math", "errors") for i in graph()[module]), module


def test_networks_hold_architecture_only():
    """Network files import nothing of maskdiff but each other (relatively: they travel as remote code)."""
    for path in (SRC / "networks").glob("*.py"):
        bad = [m for m in imports(path) if m.startswith("maskdiff.") and not m.startswith("maskdiff.networks.")]
        assert not bad, f"{path.name} imports {bad}"


def test_registries_match_the_config_names():
    from maskdiff import config
    from maskdiff.modalities import MODALITIES
    from maskdiff.objectives import OBJECTIVES

    from maskdiff.loss import TIME_SAMPLERS
    from maskdiff.networks.transformer import INITS

    assert tuple(OBJECTIVES) == config.OBJECTIVES
    assert tuple(MODALITIES) == config.MODALITIES
    assert TIME_SAMPLERS == config.TIME_SAMPLERS
    assert INITS == config.INITS


def test_no_pickle_anywhere():
    """No module loads with pickle or torch.load, but the converter of released checkpoints, which reads a
    pickle only on the user's explicit opt-in and then as tensors only (torch.load with weights_only=True)."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        if path.relative_to(SRC).as_posix() == "convert.py":
            calls = [line for line in text.split('"""', 2)[2].splitlines() if "torch.load(" in line]  # the code, not the docstring
            assert calls and all("weights_only=True" in c for c in calls), calls
            assert "if not allow_pickle:" in text
        else:
            assert "torch.load(" not in text, path


def test_the_tests_mirror_the_package():
    """Each folder of tests/ holds the tests of the package or module of src/maskdiff with its name (gpu: the
    CUDA suite across all of them), and no test file is left at the top but the whole-package ones."""
    tests = Path(__file__).resolve().parent
    folders = sorted(p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    unknown = [f for f in folders if f != "gpu" and not (SRC / f).is_dir() and not (SRC / f"{f}.py").is_file()]
    assert not unknown, f"tests/{unknown} mirror nothing in src/maskdiff"
    top = sorted(p.name for p in tests.glob("test_*.py"))
    assert top == ["test_docs.py", "test_layering.py"], top
