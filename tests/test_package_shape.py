"""The package's import graph: no cycle (counting imports inside functions, so none can hide one),
no library module importing the command line (cat_jax.cli sits on top), no module loaded by an
import string (invisible to this walk and to every other tool)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cat_jax"


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(name: str, path: pathlib.Path, modules) -> tuple[set[str], list[str]]:
  """(cat_jax modules `name` imports anywhere in its body, import strings it uses)."""
  is_package = path.name == "__init__.py"
  edges, strings = set(), []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      edges.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the module's package, one level up per extra dot
        pkg = name.split(".") if is_package else name.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        edges.add(sub if sub in modules else base)
    elif isinstance(node, ast.Call):
      f = node.func
      fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
      if fname in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
          and str(node.args[0].value).startswith("cat_jax"):
        strings.append(node.args[0].value)
  return {e for e in edges if e in modules and e != name}, strings


def _graph():
  modules = _modules()
  graph, strings = {}, {}
  for name, path in modules.items():
    graph[name], used = _imports(name, path, modules)
    if used:
      strings[name] = used
  return graph, strings


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (as a path back to its start) per strongly connected component with more than one module."""
  index, low, stack, on, comps = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        comps.append(comp)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  out = []
  for comp in comps:  # a concrete loop inside the component, for the message
    members, path = set(comp), [min(comp)]
    while True:
      nxt = min(w for w in graph[path[-1]] if w in members)
      if nxt in path:
        out.append(path[path.index(nxt):] + [nxt])
        break
      path.append(nxt)
  return out


def test_the_walk_sees_the_package():
  graph, _ = _graph()
  assert {"cat_jax.codec", "cat_jax.cli.app", "cat_jax.train.loop", "cat_jax.loader"} <= set(graph)
  assert "cat_jax.streaming" in graph["cat_jax.codec"]  # module level
  assert "cat_jax.data.pipeline" in graph["cat_jax.train.loop"]  # inside a function
  assert "cat_jax.cli.coding" in graph["cat_jax.cli.app"]


def test_the_cycle_finder_finds_cycles():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
  graph, _ = _graph()
  cycles = _cycles(graph)
  assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_library_modules_never_import_the_cli():
  graph, _ = _graph()
  bad = {m: sorted(e for e in edges if e == "cat_jax.cli" or e.startswith("cat_jax.cli."))
         for m, edges in graph.items() if not (m == "cat_jax.cli" or m.startswith("cat_jax.cli."))}
  assert not {m: e for m, e in bad.items() if e}


def test_no_import_strings():
  _, strings = _graph()
  assert not strings
