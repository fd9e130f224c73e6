"""The structure the code promises (docs/architecture.md), checked.

The pieces provide the interfaces they declare; the package has no import
cycle and no module past 600 lines; no contract is probed with
``getattr(obj, "name", None)``; the sans-IO core imports no reactor.
"""

import ast
import os

import pytest
from zope.interface.verify import verifyClass, verifyObject

from twisted_mfocus.focus.call import CallLeg
from twisted_mfocus.focus.interfaces import IDialogUsage, IEventPackage, IRoom
from twisted_mfocus.focus.probe import ProbeUAS
from twisted_mfocus.focus.refer import ReferSubscription
from twisted_mfocus.focus.subscriber import Subscriber
from twisted_mfocus.focus.subscriptions import Subscription
from twisted_mfocus.sip.interfaces import ITransactionUser

from .focusrig import Phone, join, make_rig

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "twisted_mfocus")


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                yield rel.replace(os.sep, ".").removesuffix(".__init__"), path


def _imports(module, path):
    """The package modules ``module`` imports at its top level."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("twisted_mfocus"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("twisted_mfocus"))
    return out


def test_focus_pieces_provide_their_interfaces():
    rig = make_rig()
    join(rig, Phone(5070))
    focus = rig.focus
    room = focus.rooms.get("room")
    assert verifyObject(ITransactionUser, focus)
    probe = ProbeUAS()
    assert verifyObject(ITransactionUser, probe)
    assert probe.attach(object()) is None and probe.shutdown() is None
    assert verifyObject(IRoom, room)
    for package in (focus.package, focus.mf_package):
        assert verifyObject(IEventPackage, package)
    for usage in (CallLeg, Subscription, Subscriber, ReferSubscription):
        assert verifyClass(IDialogUsage, usage)
    assert IDialogUsage.providedBy(room.legs[0])


def test_no_import_cycle():
    modules = dict(_modules())
    graph = {m: {t for t in _imports(m, p) if t in modules and t != m}
             for m, p in modules.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for t in graph[m]:
            visit(t)
        path.pop()
        done.add(m)
    for m in graph:
        visit(m)


def test_no_module_over_600_lines():
    long = {m: n for m, p in _modules() if (n := sum(1 for _ in open(p))) > 600}
    assert not long


def test_no_getattr_probing_for_a_contract():
    for module, path in _modules():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" \
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant):
                pytest.fail(f"{module}:{node.lineno} probes {node.args[1].value!r}")


def test_sans_io_core_imports_no_reactor():
    for module, path in _modules():
        if module.split(".")[1:2] in (["sip"], ["conference"]) or module.endswith(
                (".mixer", ".receiver", ".packet", ".g711", ".sdp", ".codecs", ".sdes",
                 ".srtp", ".qualify", ".offers")):
            assert "twisted.internet import reactor" not in open(path).read(), module
