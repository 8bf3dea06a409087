"""The package's imports point one way (the layers of kdjax/__init__.py) and only at module
top: every import of a kdjax module by a kdjax module goes to its own layer or a lower one, the
import graph has no cycle, and no function imports a kdjax module late."""

import ast
import os

from conftest import REPO

# Lowest first. A module may import its own layer's modules (without a cycle) and lower layers.
LAYERS = [
    ("errors",),
    ("files", "image_ops", "sharding", "runtime", "stats", "configlib", "cli", "checkpoint",
     "preemption", "metric_writers"),
    ("models", "steps", "optim"),
    ("hf",),
    ("data", "losses"),
    ("distill",),
    ("evaluators", "validate"),
    ("train",),
    ("export", "generate", "main", "predict", "tools"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
PACKAGE = os.path.join(REPO, "kdjax")


def _modules() -> dict[str, str]:
  """kdjax module name -> file."""
  out = {}
  for root, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        out[".".join(parts)] = path
  return out


def _imports(path: str, modules: dict) -> tuple[set, list]:
  """(kdjax modules imported at module level, function-local imports of kdjax modules)."""
  tree = ast.parse(open(path).read())
  late = []
  local_nodes = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for sub in ast.walk(node):
        if isinstance(sub, (ast.Import, ast.ImportFrom)):
          local_nodes.add(id(sub))
  top = set()
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                 else node.module for a in node.names]
    targets = [t for t in targets if t == "kdjax" or t.startswith("kdjax.")]
    if not targets:
      continue
    if id(node) in local_nodes:
      late.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: {ast.unparse(node)}")
    else:
      top.update(targets)
  return top, late


def _layer(module: str) -> str:
  return module.split(".")[1] if module.count(".") else "__init__"


def _graph():
  modules = _modules()
  graph, late = {}, []
  for name, path in modules.items():
    top, lt = _imports(path, modules)
    graph[name] = {t for t in top if t in modules and t != name}
    late += lt
  return modules, graph, late


def test_no_function_imports_a_kdjax_module_late():
  _, _, late = _graph()
  assert not late, "imports of kdjax modules inside functions:\n" + "\n".join(late)


def test_every_module_has_a_layer():
  modules, _, _ = _graph()
  missing = sorted({_layer(m) for m in modules} - set(RANK) - {"__init__"})
  assert not missing, f"add these kdjax modules/packages to LAYERS: {missing}"


def test_imports_point_down_the_layers():
  _, graph, _ = _graph()
  upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps
            if _layer(a) != "__init__" and _layer(b) != "__init__"
            and RANK[_layer(b)] > RANK[_layer(a)]]
  assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
  _, graph, _ = _graph()
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
      if dep not in state:
        visit(dep)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_the_rules_catch_a_late_import_and_an_upward_import(tmp_path):
  """The checks themselves fail on a violating module (a test that cannot fail proves nothing)."""
  bad = tmp_path / "bad.py"
  bad.write_text("from kdjax import errors\n\ndef f():\n  from kdjax.train import trainer\n")
  modules = {"kdjax.errors": "", "kdjax.train.trainer": ""}
  top, late = _imports(str(bad), modules)
  assert top == {"kdjax.errors"} and len(late) == 1
  assert RANK[_layer("kdjax.train.trainer")] > RANK[_layer("kdjax.errors")]
