"""requirements.txt names, pinned, every third-party package the repository's Python imports.

A fresh virtual environment gets only what requirements.txt names (README, "Install";
.ci/run does the same), so an import of anything else fails there even when the machine's own Python
happens to have it. The checker reads every .py file of the repository as it is when the test runs
(scripts, utils/, tests/, bench/ and any package added later), takes the top-level name of each
`import x` / `from x import y` (relative imports and the standard library aside) and of
`importlib.import_module("x")` / `__import__("x")` with a literal name, and maps it to the distribution
that provides it.
"""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import repo_files

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements.txt"

# Import name -> distribution name where they differ; any other module is provided by the
# distribution of the same name (compared as pip compares names: case, "-", "_" and "." alike).
DISTRIBUTION_OF = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "bs4": "beautifulsoup4",
}



def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> dict[str, str]:
    """Normalized distribution name -> the requirement line (comments and blank lines dropped)."""
    reqs = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(f"{path.name}: options such as {line!r} are not supported here")
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if name is None:
            raise ValueError(f"{path.name}: cannot read the requirement {line!r}")
        reqs[normalize(name.group())] = line
    return reqs


def source_files(root: Path) -> list[Path]:
    return repo_files((".py",), root)


def local_names(root: Path, path: Path) -> set[str]:
    """Names an import in `path` may mean locally: the repository's top-level modules and packages,
    and the modules beside `path` (a script run directly imports its neighbours)."""
    names = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if p.is_dir()}
    return names | {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of the absolute imports in `tree`, wherever they are (functions, try blocks)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names if name and not name.startswith(".")}


def third_party_imports(root: Path) -> dict[str, set[str]]:
    """Distribution name -> the files (relative to `root`) that import a module of it."""
    found: dict[str, set[str]] = {}
    for path in source_files(root):
        local = local_names(root, path)
        for module in imported_modules(ast.parse(path.read_text(), filename=str(path))):
            if module in sys.stdlib_module_names or module in local or module == "__main__":
                continue
            found.setdefault(DISTRIBUTION_OF.get(module, module), set()).add(str(path.relative_to(root)))
    return found


def missing_requirements(root: Path, requirements: Path) -> dict[str, set[str]]:
    """The imported distributions that `requirements` does not name, with the files that import them."""
    named = read_requirements(requirements)
    return {dist: files for dist, files in third_party_imports(root).items() if normalize(dist) not in named}


# --------------------------------------------------------------------------------------------------

def test_every_imported_third_party_package_is_in_requirements():
    missing = missing_requirements(REPO, REQUIREMENTS)
    assert not missing, "imported but not in requirements.txt: " + "; ".join(
        f"{dist} ({', '.join(sorted(files))})" for dist, files in sorted(missing.items()))


def test_the_scan_covers_the_code_the_tests_and_bench():
    scanned = set(source_files(REPO))
    expected = set(REPO.glob("*.py")) | {p for d in ("utils", "tests", "bench") for p in (REPO / d).rglob("*.py")
                                         if "__pycache__" not in p.parts}
    assert {"prng_train_lowmem.py", "curriculum_lowmem.py"} <= {p.name for p in expected}
    assert any(p.parent.name == "bench" for p in expected) and Path(__file__).resolve() in expected
    assert expected <= scanned, sorted(str(p) for p in expected - scanned)
    imported = third_party_imports(REPO)
    assert {"torch", "numpy", "PyYAML", "pytest"} <= set(imported)
    assert "utils" not in imported and "tests" not in imported  # our own packages are not third-party


def test_every_requirement_is_pinned_to_one_version():
    for name, line in read_requirements(REQUIREMENTS).items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.+!-]*", line.replace(" ", "")), line
    assert read_requirements(REQUIREMENTS)["torch"] == "torch==2.13.0"


def test_this_python_has_the_pinned_versions():
    """The environment running the tests is the one requirements.txt describes (a local label such as
    torch's +cpu aside)."""
    wrong = []
    for name, line in read_requirements(REQUIREMENTS).items():
        pinned = line.split("==", 1)[1].strip()
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != pinned:
            wrong.append(f"{line} (installed: {installed})")
    assert not wrong, "pip install -r requirements.txt: " + ", ".join(wrong)


# The checker itself, on small trees made for the purpose: it must be able to fail.

def make_tree(tmp_path: Path, files: dict[str, str], requirements: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "requirements.txt").write_text(requirements)
    return tmp_path


def test_checker_reports_an_import_that_requirements_does_not_name(tmp_path):
    root = make_tree(tmp_path, {
        "train.py": "import numpy as np\nimport os\nfrom utils import helper\n",
        "utils/__init__.py": "",
        "utils/helper.py": "from . import other\nfrom .other import x\n\ndef f():\n    import surely_not_a_package_xyz.sub\n",
        "tests/test_a.py": "try:\n    import another_unknown_pkg\nexcept ImportError:\n    pass\n",
        "bench/b.py": "import importlib\nm = importlib.import_module('third_unknown.mod')\nimport b_sibling\n",
        "bench/b_sibling.py": "",
    }, "numpy==2.4.6\n")
    assert missing_requirements(root, root / "requirements.txt") == {
        "surely_not_a_package_xyz": {"utils/helper.py"},
        "another_unknown_pkg": {"tests/test_a.py"},
        "third_unknown": {"bench/b.py"},
    }


def test_checker_maps_modules_to_distributions_and_compares_names_as_pip_does(tmp_path):
    root = make_tree(tmp_path, {"a.py": "import yaml\nimport typing_extensions\nfrom PIL import Image\n"},
                     "pyyaml==6.0.3  # comment\n\nTyping.Extensions==4.15.0\n")
    assert missing_requirements(root, root / "requirements.txt") == {"Pillow": {"a.py"}}
    (root / "requirements.txt").write_text("numpy==2.4.6\n")
    assert set(missing_requirements(root, root / "requirements.txt")) == {"PyYAML", "typing_extensions", "Pillow"}


def test_checker_skips_virtual_environments_outputs_and_hidden_directories(tmp_path):
    root = make_tree(tmp_path, {
        "env/pyvenv.cfg": "home = /usr/bin\n",
        "env/lib/python3.11/site-packages/x/y.py": "import inside_venv\n",
        "results/r.py": "import inside_results\n",
        ".git/hooks/h.py": "import inside_hidden\n",
        "analyze.py": "import pandas\n",
    }, "")
    assert missing_requirements(root, root / "requirements.txt") == {"pandas": {"analyze.py"}}


def test_a_requirement_line_that_cannot_be_read_is_an_error(tmp_path):
    (tmp_path / "requirements.txt").write_text("-e .\n")
    with pytest.raises(ValueError, match="not supported"):
        read_requirements(tmp_path / "requirements.txt")
