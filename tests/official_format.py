"""Official EG3D-style snapshot pickles for tests, written the way the official code writes them.

A stand-in ``torch_utils.persistence`` module (registered in ``sys.modules`` only while a
test runs, by :func:`register_official_modules`) pickles "persistent" modules as
``_reconstruct_persistent_obj(meta)`` with the source text of their defining file in
``meta["module_src"]``; its loader ``exec``s that text, as the official one does.
"""

import copy
import pickle
import sys
import types
from collections import OrderedDict


def _reconstruct_persistent_obj(meta):
    """The official loader's behaviour: exec the embedded module source, then rebuild."""
    exec(meta["module_src"], {})  # noqa: S102 - the unsafe behaviour our importer must avoid
    obj = types.SimpleNamespace()
    obj.__dict__.update(meta["state"])
    return obj


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict."""


EasyDict.__module__ = "dnnlib.util"


class Persistent:
    """Pickles like an instance of a class decorated with ``persistence.persistent_class``."""

    def __init__(self, class_name, state, module_src):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)


def register_official_modules(monkeypatch):
    """Register the stand-in official modules so that pickle can name them (undone after the test)."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    for name, module in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def persistent_tree(module, module_src):
    """Wrap every module whose class is not from torch.nn as a persistent object (official layout).

    torch.nn modules stay ordinary objects (pickled by reference) with converted children.
    Attributes holding our own config objects are left out: official modules keep settings
    as plain dicts and numbers, and pickle would name our classes otherwise.
    """
    children = OrderedDict(
        (name, None if child is None else persistent_tree(child, module_src)) for name, child in module._modules.items()
    )
    if type(module).__module__.startswith("torch.nn."):
        clone = copy.copy(module)
        clone._modules = children
        return clone
    state = {key: value for key, value in module.__dict__.items() if not type(value).__module__.startswith("portrait4d")}
    state["_modules"] = children
    return Persistent(type(module).__name__, state, module_src)


def snapshot_bytes(networks, module_src, protocol=pickle.DEFAULT_PROTOCOL):
    """A snapshot dict as training_loop_recon_v2.py writes it, pickled the official way."""
    snapshot = {"training_set_kwargs": EasyDict(resolution=64, path="data")}
    snapshot.update({name: persistent_tree(module, module_src) for name, module in networks.items()})
    snapshot.update(D_patch=None, augment_pipe=None)
    return pickle.dumps(snapshot, protocol=protocol)
