"""The progress bar: a widget only where Jupyter can show one."""

import sys
import types
import warnings

import pytest

from fedq import progress


@pytest.fixture
def kernel_without_ipywidgets(monkeypatch):
    """What a Jupyter kernel without ipywidgets looks like to tqdm: ipykernel's shell loaded,
    and `import ipywidgets` failing. tqdm's automatic modules are imported afresh."""
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    for name in ["tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_tqdm_auto_warns_in_a_kernel_without_ipywidgets(kernel_without_ipywidgets):
    with pytest.warns(Warning, match="IProgress not found"):
        import tqdm.auto  # noqa: F401


def test_the_bar_is_text_there_and_nothing_warns(kernel_without_ipywidgets):
    from tqdm.std import tqdm as text

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert progress.bar_class() is text
        bar = progress.Progress("0123456789", 3, enabled=True)
        bar.update([{"organization": "a", "status": "completed"}], {"a": "registry-a"})
        bar.close()


def test_outside_a_kernel_the_bar_is_tqdm_auto(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    from tqdm.auto import tqdm

    assert progress.bar_class() is tqdm
