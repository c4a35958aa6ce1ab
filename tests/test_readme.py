"""The README's first commands are what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_install_and_test_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block[0].startswith("pip install . && sgdlab train")
    assert block[1].startswith('pip install ".[test]" && python -m pytest')
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[0] in ci and block[1] in ci


def test_docstring_examples_run():
    import doctest
    import importlib
    import pkgutil

    import sgdlab

    failed = 0
    for info in pkgutil.walk_packages(sgdlab.__path__, "sgdlab."):
        if info.name != "sgdlab.__main__":
            failed += doctest.testmod(importlib.import_module(info.name)).failed
    failed += doctest.testmod(sgdlab).failed
    assert failed == 0
