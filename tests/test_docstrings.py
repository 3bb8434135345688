"""Every example in a public docstring runs and prints what it says (the docs cannot rot)."""

from __future__ import annotations

import doctest

import pytest

import topkloss

PUBLIC = sorted(name for name in topkloss.__all__ if callable(getattr(topkloss, name)))


def test_every_public_function_has_an_example():
    missing = [n for n in PUBLIC if ">>>" not in (getattr(topkloss, n).__doc__ or "")]
    assert not missing, f"public functions without a docstring example: {missing}"


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_example(name):
    fn = getattr(topkloss, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(fn, name, globs={}):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in topkloss.{name}"
