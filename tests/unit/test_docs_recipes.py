"""The shell recipes the README and the documentation site show are run as written, so they stay true.

A ```bash block right after a ``<!-- recipe -->`` line is run with ``bash -e`` in a fresh folder;
``<!-- recipe: my_scenes -->`` first lays out ``my_scenes/`` there (the demo scenes' train/val
folders, as a user's own files, without the demo's manifest). The site itself is built by
``mkdocs build --strict`` in the last test (MkDocs comes with ``pip install ".[dev]"``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- recipe(?:: (?P<setup>[\w-]+))? -->\n```bash\n(?P<body>.*?)^```", re.M | re.S)


def recipes() -> list[tuple[str, str | None, str]]:
    """(page:line, setup, script) of every marked block."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in MARK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match["setup"], match["body"]))
    return found


def lay_out_my_scenes(folder: Path, demo_root: Path) -> None:
    """``my_scenes/{train,val}/{images,labels}``: the demo scenes as a folder of the user's."""
    shutil.copytree(demo_root, folder, ignore=shutil.ignore_patterns("manifest.csv", ".geoseg-demo.json"))


def test_the_pages_hold_recipes():
    """The tour and your own data are the README's; the site's getting-started page includes them."""
    found = recipes()
    assert [(page.split(":")[0], setup) for page, setup, _ in found][:2] == [
        ("README.md", None), ("README.md", "my_scenes")]  # fmt: skip
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert '--8<-- "README.md:tour"' in page and '--8<-- "README.md:own-data"' in page


@pytest.mark.parametrize(("where", "setup", "script"), recipes(), ids=[r[0] for r in recipes()])
def test_a_recipe_runs_as_written(where, setup, script, tmp_path, demo_root):
    if setup == "my_scenes":
        lay_out_my_scenes(tmp_path / "my_scenes", demo_root)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HYDRA_FULL_ERROR": "0"}  # fmt: skip
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, f"{where}: {done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{where}: {done.stderr[-3000:]}"


def test_the_site_builds_without_a_warning(tmp_path):
    """``mkdocs build --strict``: a broken link, a missing page or an API name that moved fails it."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
