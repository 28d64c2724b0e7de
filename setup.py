"""Ships templates/, migrations/ and content/ inside the wheel as mailer/_shipped/.

The three folders stay at the top of the repository. Building a wheel copies them into the
built package; an editable install (`pip install -e .`) copies nothing and mailer.resources
finds them at the top of the checkout instead. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("templates", "migrations", "content")  # kept in step with mailer/resources.py
# build_guide.py makes the guide PDF from its Markdown (a development tool, needs fpdf2); the PDF ships.
IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*", "build_guide.py")


class build_py_with_shipped(build_py):
    def run(self) -> None:
        if getattr(self, "editable_mode", False):
            super().run()
            return
        package = Path(self.build_lib) / "mailer"
        # setuptools reuses build/lib: a module since moved or deleted would still go into the wheel.
        shutil.rmtree(package, ignore_errors=True)
        super().run()
        for name in SHIPPED:
            shutil.copytree(ROOT / name, package / "_shipped" / name, ignore=IGNORED)


setup(cmdclass={"build_py": build_py_with_shipped})
