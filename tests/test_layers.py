"""The package's architecture, guarded: imports run one way along the chain

    errors → world → settings | editing | frames → autoencoder → diffusion | autoregressive
           → hub | training | branching → engine | outputs | experiment → arguments → runtime | cli → ui → evaluation → app.py

A module may import from its own package and from any layer to its left, never to its right or
from a sibling in its own layer, and no set of modules may import each other in a circle. Imports
inside functions count too: they hide a cycle, they do not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

# Each entry is one layer; the names are the first part of a module's path under playground/
# ("world" is playground/world/..., "settings" is playground/settings.py); app is app.py.
LAYERS = (
    ("errors",),
    ("world",),
    ("settings", "editing", "frames", "attention_overlay"),
    ("autoencoder",),
    ("diffusion", "autoregressive"),
    ("hub", "training", "branching"),
    ("engine", "outputs", "experiment"),
    ("arguments",),
    ("runtime", "cli"),
    ("ui", "__main__"),
    ("evaluation",),
    ("app",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_MODULE_LINES = 450


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources(root: Path = REPO_ROOT) -> dict[str, str]:
    """{module name: source} for app.py and every module of the playground package."""
    files = [root / "app.py", *sorted((root / "playground").rglob("*.py"))]
    return {module_name(f, root): f.read_text() for f in files}


def imported_modules(name: str, source: str, known: set[str]) -> set[str]:
    """The project modules that `name` imports anywhere in its source, resolved to the longest
    known module (`from playground.world import shapes` is playground.world.shapes)."""
    package = name if name.endswith("__init__") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "playground" and len(parts) > 1 else parts[0]


def violations(sources: dict[str, str]) -> list[str]:
    """Every import against the layer order, and every import cycle, in words."""
    known = set(sources)
    graph = {name: imported_modules(name, src, known) for name, src in sources.items()}
    problems = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name)
        if name != "playground" and here not in RANK:
            problems.append(f"{name} belongs to no layer: add it to LAYERS")
            continue
        for target in sorted(targets):
            there = layer_of(target)
            if target == "playground" or there == here:
                continue
            if there not in RANK or RANK[there] >= RANK[here]:
                problems.append(f"{name} imports {target}: {there} is not below {here}")
    # cycles: depth-first search, reporting each back edge's loop once
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return problems


def test_imports_follow_the_layers_without_cycles():
    sources = project_sources()
    assert "playground.world.shapes" in sources and "app" in sources
    assert violations(sources) == []


def test_a_planted_back_import_or_cycle_is_caught():
    sources = project_sources()
    sources["playground.world.shapes"] += "\n\ndef _late():\n    from playground.ui import handlers\n"
    assert any("playground.world.shapes imports playground.ui" in p for p in violations(sources))

    sources = project_sources()
    sources["playground.world.text"] += "\nfrom playground.world import regions\n"
    sources["playground.world.regions"] += "\nfrom playground.world import text\n"
    assert any(p.startswith("import cycle:") and "playground.world.text" in p for p in violations(sources))


def test_no_module_is_a_long_file():
    long = {name: src.count("\n") for name, src in project_sources().items() if src.count("\n") > MAX_MODULE_LINES}
    assert long == {}, f"split these by responsibility: {long}"


def imports_gradio(source: str) -> bool:
    """Whether a module's source imports gradio (or gradio_client) anywhere, functions included."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(n.split(".")[0] in ("gradio", "gradio_client") for n in names):
            return True
    return False


def gradio_in_runtime(sources: dict[str, str]) -> list[str]:
    """The runtime modules that import gradio, themselves or through the project modules they
    import: a run is the same whatever shows it, and the page's framework stays in ui/."""
    known = set(sources)
    graph = {name: imported_modules(name, src, known) for name, src in sources.items()}
    problems = []
    for name in sorted(n for n in sources if layer_of(n) == "runtime"):
        seen, todo = set(), [name]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        problems += [f"{name} imports gradio" + ("" if m == name else f" through {m}")
                     for m in sorted(seen) if imports_gradio(sources[m])]
    return problems


def test_the_runtime_never_imports_gradio():
    sources = project_sources()
    assert "playground.runtime.run" in sources and "playground.runtime.workers" in sources
    assert gradio_in_runtime(sources) == []

    sources["playground.runtime.pacing"] += "\n\ndef _late():\n    import gradio as gr\n"
    assert "playground.runtime.pacing imports gradio" in gradio_in_runtime(sources)
    sources = project_sources()
    sources["playground.settings"] += "\nfrom gradio.data_classes import FileData\n"
    assert "playground.runtime.run imports gradio through playground.settings" in gradio_in_runtime(sources)
