"""Static layering, stage and size checks over the repository's package folders (used by tests/test_layering.py).

Everything here reads source text with `ast`; nothing is imported, so a check cannot be fooled (or slowed)
by import side effects. Every check is a pure function of `sources`, a mapping {relative posix path: text},
so a test can feed it a planted violation; `read_sources(root)` builds that mapping from a checkout.

Installed names. `pyproject.toml` (`package-dir`) installs the repository folders `cli/`, `models/` and
`hw_targets/` as `na_deploy.cli`, `na_deploy.models` and `na_deploy.hw_targets`; `FOLDER_PACKAGES` holds
that mapping and `module_name` turns a file path into the name Python imports it by. A bare `import cli` /
`import models` / `import hw_targets` names a folder that is not installed under that name: it is reported
as such and otherwise treated as the installed package, so it cannot slip past the rules below.

What counts as an import. `import a.b`, `from a import b` (absolute or relative; relative ones resolved
against the importing module's package) and `importlib.import_module("a.b")` / `__import__("a.b")` with a
literal string. `from pkg import name` resolves to the module `pkg.name` when that file exists among the
sources, else to `pkg` (a name defined in pkg's `__init__`).

Layer rules (`layer_violations`), for imports anywhere in a module, also inside functions and under
`if TYPE_CHECKING:` (a lazy import is still a dependency):
  * `na_deploy.models` imports only the standard library, torch and itself;
  * the core (`na_deploy` minus its `cli`, `models`, `hw_targets` sub-packages) never imports
    `na_deploy.hw_targets` or `na_deploy.cli`;
  * `na_deploy.hw_targets` never imports `na_deploy.cli`;
  * the IR (`na_deploy.ir`) never imports its file formats (`na_deploy.io`).

Stage rule (`stage_violations`), inside the core, for imports anywhere in a module as above: the core is a
line of stages, `STAGES`, lowest first; a module may import modules of its own stage and of earlier ones, never
of a later one (no arrow back up). A sub-package `na_deploy/<name>/` is the stage `<name>` (a sub-package that
the order lacks is reported: place it); a top-level module `na_deploy/<name>.py` belongs to the shared base,
unless `MODULE_STAGES` places it: `protocols` states the Target / Backend protocols over IR types (stage ir),
`testing` calls verify (stage verify). simulate precedes convert: the converter's self-check evaluates the
FloatNet it made with simulate's ANN evaluator.

Missing modules (`missing_modules`): an import of a `na_deploy...` module that no file provides.

Cycle rule (`import_cycles`): in tests/cycles.py, over the imports read here.

Size rule (`size_offenders`): module length = number of lines of the file; function length = from its
`def` line to its last line (decorators excluded, docstring and nested functions included); methods and
nested functions are measured too, named by their dotted qualified name.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Mapping, Optional

# repository folder -> installed package name (pyproject.toml, [tool.setuptools] package-dir)
FOLDER_PACKAGES: dict[str, str] = {
    "na_deploy": "na_deploy",
    "cli": "na_deploy.cli",
    "models": "na_deploy.models",
    "hw_targets": "na_deploy.hw_targets",
}
CORE = "na_deploy"
CLI = "na_deploy.cli"
MODELS = "na_deploy.models"
HW_TARGETS = "na_deploy.hw_targets"
IR = "na_deploy.ir"
IO = "na_deploy.io"
# The core's stages, lowest first (issue 18): see "Stage rule" above.
# simulate comes before convert: it needs only the IR, and the converter's float64 self-check runs the ANN
# evaluator (simulate.ann) on the FloatNet it made, with the IR ops as torch functions (simulate.torch_ops).
STAGES = ("base", "ir", "io", "data", "training", "simulate", "convert", "evaluate", "verify", "pipeline")
MODULE_STAGES = {"protocols": "ir", "testing": "verify"}  # top-level modules outside the base stage
MODELS_MAY_IMPORT = ("torch",)  # besides the standard library and na_deploy.models itself
STDLIB: frozenset[str] = frozenset(sys.stdlib_module_names) | {"__future__"}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen in `path` (the repository path) at `line`."""

    path: str        # e.g. "hw_targets/loihi2/target.py"
    module: str      # installed name of the importing module, e.g. "na_deploy.hw_targets.loihi2.target"
    line: int
    text: str        # the statement as written, e.g. "from na_deploy.cli.main import main"
    target: str      # resolved module name, e.g. "na_deploy.cli.main" (or "numpy", "torch.nn")
    at_import: bool  # executed when the module is imported (module level, not under TYPE_CHECKING)
    folder_alias: bool = False  # written as `cli` / `models` / `hw_targets` (a folder name, not installed)

    def where(self) -> str:
        """`path:line: `statement`` for messages."""
        return f"{self.path}:{self.line}: `{self.text}`"


# ---------------------------------------------------------------------------------------------- sources
def read_sources(root: Path | str) -> dict[str, str]:
    """{repository-relative posix path: text} of every .py file in the package folders under `root`."""
    root = Path(root)
    sources = {}
    for folder in FOLDER_PACKAGES:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root)
            if "__pycache__" not in rel.parts:
                sources[rel.as_posix()] = path.read_text(encoding="utf-8")
    return sources


def module_name(path: str) -> str:
    """Installed module name of a repository path: `cli/main.py` -> `na_deploy.cli.main`,
    `na_deploy/ir/__init__.py` -> `na_deploy.ir`."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts[0] not in FOLDER_PACKAGES:
        raise ValueError(f"{path}: not under a package folder ({', '.join(FOLDER_PACKAGES)})")
    parts[:1] = FOLDER_PACKAGES[parts[0]].split(".")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _in(name: str, package: str) -> bool:
    """`name` is `package` or inside it."""
    return name == package or name.startswith(package + ".")


def _installed(name: str) -> tuple[str, bool]:
    """Map a bare folder name (`hw_targets.x`) to its installed name; the flag says whether it was one."""
    head, _, rest = name.partition(".")
    if head in FOLDER_PACKAGES and head != CORE:
        return FOLDER_PACKAGES[head] + ("." + rest if rest else ""), True
    return name, False


# ---------------------------------------------------------------------------------------------- imports
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.Module) -> Iterator[tuple[ast.AST, bool]]:
    """Every node of `tree` with a flag: executed at import time (module body, top-level blocks, class
    bodies) rather than inside a function / lambda or under `if TYPE_CHECKING:`."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, at_import = stack.pop()
        yield node, at_import
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, False) for child in node.body)
            stack.extend((child, at_import) for child in node.orelse)
            stack.append((node.test, at_import))
            continue
        inner = at_import and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _package_of(module: str, path: str) -> str:
    """The package a relative import in `module` starts from."""
    return module if path.endswith("__init__.py") else module.rpartition(".")[0]


def _resolve_from(node: ast.ImportFrom, module: str, path: str) -> Optional[str]:
    """The base module of a `from X import ...` statement, relative imports resolved; None if it climbs
    above the top-level package."""
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    if node.level - 1 >= len(base):
        return None
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _literal_import_call(node: ast.AST) -> Optional[str]:
    """"a.b" for `importlib.import_module("a.b")`, `import_module("a.b")` or `__import__("a.b")`."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    return node.args[0].value if name in ("import_module", "__import__") else None


def _segment(lines: list[str], node: ast.AST) -> str:
    """The source text of `node` (like ast.get_source_segment, without re-splitting the file per call;
    ast offsets are UTF-8 byte offsets)."""
    first, last = node.lineno - 1, node.end_lineno - 1
    chunk = [ln.encode() for ln in lines[first:last + 1]]
    chunk[-1] = chunk[-1][:node.end_col_offset]
    chunk[0] = chunk[0][node.col_offset:]
    return b"\n".join(chunk).decode()


def imports_of(path: str, source: str, known: Iterable[str] = ()) -> list[Import]:
    """Every import in one file. `known` is the set of installed module names that exist (to tell
    `from pkg import submodule` from `from pkg import name`). SyntaxError propagates."""
    known = set(known)
    module = module_name(path)
    tree = ast.parse(source, filename=path)
    lines = source.splitlines()
    found = []

    def add(node: ast.AST, target: str, at_import: bool) -> None:
        text = " ".join(_segment(lines, node).split())
        target, alias = _installed(target)
        found.append(Import(path, module, node.lineno, text, target, at_import, alias))

    for node, at_import in _statements(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(node, a.name, at_import)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, path)
            if base is None:
                add(node, "." * node.level + (node.module or ""), at_import)
                continue
            base_inst = _installed(base)[0]
            for a in node.names:
                sub = f"{base_inst}.{a.name}"
                add(node, sub if sub in known else base, at_import)
        else:
            target = _literal_import_call(node)
            if target is not None:
                add(node, target, at_import)
    return sorted(found, key=lambda i: (i.line, i.target))


def all_imports(sources: Mapping[str, str]) -> tuple[list[Import], list[str]]:
    """(imports of every file, messages for files that do not parse)."""
    known = {module_name(p) for p in sources}
    found, errors = [], []
    for path in sorted(sources):
        try:
            found.extend(imports_of(path, sources[path], known))
        except SyntaxError as e:
            errors.append(f"{path}:{e.lineno}: cannot parse: {e.msg}")
    return found, errors


# ---------------------------------------------------------------------------------------------- layering
def _layer_rule_broken(imp: Import) -> Optional[str]:
    """Why `imp` breaks a layer rule, or None."""
    src, dst = imp.module, imp.target
    if _in(src, MODELS):
        top = dst.partition(".")[0]
        if not (_in(dst, MODELS) or top in STDLIB or top in MODELS_MAY_IMPORT):
            return "na_deploy.models may import only the standard library, torch and itself"
    elif _in(src, HW_TARGETS):
        if _in(dst, CLI):
            return "na_deploy.hw_targets must not import na_deploy.cli"
    elif _in(src, CLI):
        return None
    elif _in(src, CORE):
        for banned in (HW_TARGETS, CLI):
            if _in(dst, banned):
                return f"the core (na_deploy) must not import {banned}, not even inside a function"
        if _in(src, IR) and _in(dst, IO):
            return f"the IR ({IR}) must not import its file formats ({IO}); they import the IR"
    return None


def layer_violations(sources: Mapping[str, str]) -> list[str]:
    """One message per import that breaks a layer rule (module docstring), plus files that do not parse
    and imports that name a repository folder instead of its installed package."""
    found, errors = all_imports(sources)
    messages = list(errors)
    for imp in found:
        if imp.folder_alias:
            messages.append(f"{imp.where()}: imports the repository folder name; use the installed "
                            f"name {imp.target.split('.')[0]}.{imp.target.split('.')[1]}")
        why = _layer_rule_broken(imp)
        if why:
            messages.append(f"{imp.where()}: imports {imp.target}; {why}")
    return messages


def missing_modules(sources: Mapping[str, str]) -> list[str]:
    """One message per import of a `na_deploy...` module that no file provides (a stale name left behind
    by a move or rename; a lazy import inside a function fails only when it runs)."""
    found, _ = all_imports(sources)
    known = {module_name(p) for p in sources}
    return [f"{imp.where()}: imports {imp.target}, which no file in the package folders provides"
            for imp in found if _in(imp.target, CORE) and imp.target not in known]


# ---------------------------------------------------------------------------------------------- stages
def core_packages(sources: Mapping[str, str]) -> set[str]:
    """Names of the core's sub-packages (folders under na_deploy/): {"ir", "io", ...}."""
    return {PurePosixPath(p).parts[1] for p in sources if PurePosixPath(p).parts[0] == CORE
            and len(PurePosixPath(p).parts) > 2}


def stage_of(module: str, packages: Iterable[str]) -> Optional[str]:
    """The stage of a core module: its sub-package's name, else `MODULE_STAGES`' entry, else "base"; None
    outside the core (na_deploy.cli, .models, .hw_targets and third-party modules)."""
    if not _in(module, CORE) or any(_in(module, other) for other in (CLI, MODELS, HW_TARGETS)):
        return None
    top = module.split(".")[1] if "." in module else ""
    return top if top in set(packages) else MODULE_STAGES.get(top, "base")


def stage_violations(sources: Mapping[str, str], order: Iterable[str] = STAGES) -> list[str]:
    """One message per core import of a later stage than the importing module's in `order` (the Stage rule),
    per core sub-package that `order` lacks, and per file that does not parse."""
    order = tuple(order)
    rank = {stage: i for i, stage in enumerate(order)}
    found, messages = all_imports(sources)
    packages = core_packages(sources)
    line = " < ".join(order)
    messages += [f"{CORE}/{name}/: the package {CORE}.{name} is in no stage; place it in the order ({line})"
                 for name in sorted(packages - set(order))]
    for imp in found:
        src, dst = stage_of(imp.module, packages), stage_of(imp.target, packages)
        if src in rank and dst in rank and rank[dst] > rank[src]:
            messages.append(f"{imp.where()}: imports {imp.target}; the {src} stage must not import the later "
                            f"{dst} stage ({line})")
    return messages


# ---------------------------------------------------------------------------------------------- sizes
def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def oversized(sources: Mapping[str, str], max_module_lines: int = MAX_MODULE_LINES,
              max_function_lines: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, str]]:
    """(key, lines, message) of every module over `max_module_lines` lines (key "path") and every function
    over `max_function_lines` (key "path::qualname"), largest first."""
    found = []
    for path in sorted(sources):
        n = len(sources[path].splitlines())
        if n > max_module_lines:
            found.append((path, n, f"{path}: module has {n} lines (limit {max_module_lines})"))
        try:
            tree = ast.parse(sources[path], filename=path)
        except SyntaxError:
            continue  # reported by layer_violations
        for qualname, fn in _functions(tree):
            n = fn.end_lineno - fn.lineno + 1
            if n > max_function_lines:
                found.append((f"{path}::{qualname}", n, f"{path}:{fn.lineno}: function {qualname} has {n} lines "
                                                        f"(limit {max_function_lines})"))
    return sorted(found, key=lambda o: -o[1])


def size_offenders(sources: Mapping[str, str], allowed: Iterable[str] = (), **limits: int) -> list[str]:
    """Messages of `oversized(sources, **limits)` whose key is not in `allowed`."""
    allowed = set(allowed)
    return [msg for key, _, msg in oversized(sources, **limits) if key not in allowed]
