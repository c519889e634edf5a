"""Maps src/ to the single import name `snapmux` (see pyproject's package-dir)."""
from setuptools import find_packages, setup

setup(packages=["snapmux"] + [f"snapmux.{p}" for p in find_packages("src")])
