"""Static checks of the files that only run inside the Slicer application (no Slicer here).

* they compile and are ruff clean;
* every Slicer/DICOMLib/CTK API name they use exists in Slicer 5.8 *and* later, per
  ``slicer_api_names.json`` (names parsed from Slicer's and CTK's sources; its top-level
  ``modules`` is the intersection of 5.8, 5.10, 5.12 and main). Names used inside a
  ``try`` that catches ImportError/AttributeError may come from newer versions only;
* members used through ``self`` in DICOMPlugin / ScriptedLoadableModule* subclasses exist in
  the 5.8 base class (e.g. ``examineFiles``/``addReferences`` exist only in 5.12+ and must be
  defined by the subclass itself);
* the .ui file and the parameter node wrapper agree (names and widget types), the code only
  uses widgets that exist, and CMake lists every library file and registers the tests;
* the plugin follows Slicer's registration convention, and examining files works without
  highdicom, Qt or Slicer (pydicom 2.4 era, before the user installed the dependencies).
"""

from __future__ import annotations

import ast
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "DICOMLabelmapSeg"
SLICER_FILES = [
    MODULE_DIR / "DICOMLabelmapSeg.py",
    MODULE_DIR / "DICOMLabelmapSegPlugin.py",
    MODULE_DIR / "Testing" / "Python" / "DICOMLabelmapSegFailureTest.py",
]

APP_DIR = MODULE_DIR / "DICOMLabelmapSegLib" / "app"
#: The Qt-free use cases the shell calls (app/*.py), each imported by name.
APP_MODULES = ("dependencies", "examine", "export", "load", "messages", "settings")

# Namespace (as resolved from imports) -> key of the name lists in slicer_api_names.json.
NAMESPACES = {
    "slicer.util": "slicer.util",
    "slicer.ScriptedLoadableModule": "slicer.ScriptedLoadableModule",
    "slicer.parameterNodeWrapper": "slicer.parameterNodeWrapper",
    "slicer.i18n": "slicer.i18n",
    "slicer.testing": "slicer.testing",
    "slicer.packaging": "slicer.packaging",
    "DICOMLib.DICOMUtils": "DICOMLib.DICOMUtils",
    "DICOMLib": "DICOMLib",
    "slicer.dicomDatabase": "ctkDICOMDatabase",
    "SampleData.SampleDataLogic": "SampleData.SampleDataLogic",
}
# Classes reached as slicer.<Class>: their members are checked against the class lists.
CLASS_KEYS = {
    "qSlicerDICOMExportable", "qSlicerDICOMLoadable", "qSlicerDICOMExportDialog", "vtkMRMLSubjectHierarchyNode",
    "vtkMRMLSubjectHierarchyConstants", "vtkSlicerSubjectHierarchyModuleLogic", "vtkMRMLSegmentationNode",
    "vtkSlicerSegmentationsModuleLogic", "vtkSegment", "vtkSegmentation",
}
# Variables named like this hold objects of these classes (a naming convention our Slicer files keep).
VARIABLE_CLASSES = {"exportable": "qSlicerDICOMExportable", "shNode": "vtkMRMLSubjectHierarchyNode"}
# Application objects and MRML classes that are not in the name lists; each is used the same way in
# Slicer's own code: DICOMSegmentationPlugin.py (slicer.app.temporaryPath, slicer.mrmlScene, slicer.modules),
# DICOMBrowser.py (slicer.app.processEvents, slicer.app.commandOptions), TemplateKey.py (vtkMRML*VolumeNode).
RUNTIME_NAMES = {
    "slicer.app.temporaryPath",
    "slicer.app.processEvents",
    "slicer.app.commandOptions",
    "slicer.mrmlScene",
    "slicer.mrmlScene.Clear",
    "slicer.mrmlScene.GetFirstNodeByClass",
    "slicer.mrmlScene.GetNodeByID",
    "slicer.mrmlScene.GetNumberOfNodesByClass",
    "slicer.mrmlScene.RemoveNode",
    "slicer.mrmlScene.StartCloseEvent",
    "slicer.mrmlScene.EndCloseEvent",
    "slicer.modules",
    "slicer.modules.dicomPlugins",
    "slicer.modules.dicomPlugins.items",  # a plain dict (DICOMUtils.getDefaultPluginClassNames iterates it)
    "slicer.mrmlScene.AddNewNodeByClass",  # Slicer's self-tests, e.g. SegmentationsModuleTest1.py
    "slicer.vtkMRMLScalarVolumeNode",
    "slicer.vtkMRMLSegmentationNode",
    # DICOMSegmentationPlugin.py: slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode
    "slicer.modules.segmentations.logic",
    # DICOM.py settingsPanelEntry of the DICOM module itself: ctk.ctkComboBox with currentUserDataAsString
    "ctk.ctkComboBox",
}
# Qt-side names that are neither in the lists nor Slicer's: checked by hand against Qt's API.
FOREIGN_ROOTS = {"qt", "vtk", "os", "shutil", "tempfile", "logging", "sys", "importlib", "pathlib", "Path",
                 "numpy", "np", "pydicom", "DICOMLabelmapSegLib", "DICOMLabelmapSeg",
                 "DICOMLabelmapSegPlugin", "typing", *APP_MODULES, "userMessage"}


@pytest.fixture(scope="module")
def api() -> dict:
    path = _data_root() / "slicer" / "slicer_api_names.json"
    if not path.is_file():
        pytest.skip("slicer_api_names.json not found (set DICOMLABELMAPSEG_TEST_DATA)")
    return json.loads(path.read_text())


def _data_root() -> Path:
    from conftest import DATA_DIR

    return DATA_DIR if DATA_DIR is not None else ROOT.parent / "shared" / "data"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


# --- compile and lint --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.name)
def test_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    files = [*SLICER_FILES, *sorted(APP_DIR.glob("*.py"))]
    result = subprocess.run([str(ruff), "check", *map(str, files)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# --- API names ---------------------------------------------------------------------------------------------------


class _NameCollector(ast.NodeVisitor):
    """Dotted names used in a file, resolved through its imports, with 'guarded' marks for try blocks."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.uses: list[tuple[str, int, bool]] = []
        self._guarded = 0

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.aliases.setdefault(root, root)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self.uses.append((full, node.lineno, self._guarded > 0))

    def visit_Try(self, node: ast.Try) -> None:
        caught = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        guarded = bool(caught & {"ImportError", "ModuleNotFoundError", "AttributeError"})
        self._guarded += guarded
        for statement in node.body:
            self.visit(statement)
        self._guarded -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is None:
            self.generic_visit(node)
            return
        root, *rest = chain
        if root in self.aliases:  # the whole chain only, not its prefixes
            self.uses.append((".".join([self.aliases[root], *rest]), node.lineno, self._guarded > 0))
        elif root in VARIABLE_CLASSES and rest:
            self.uses.append((f"slicer.{VARIABLE_CLASSES[root]}.{rest[0]}", node.lineno, self._guarded > 0))


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _known(name: str, modules: dict) -> bool | None:
    """True/False if the name's namespace is covered by the lists; None if not covered."""
    if name in RUNTIME_NAMES or any(name.startswith(n + ".") for n in RUNTIME_NAMES if n.endswith("Event")):
        return True
    for namespace in sorted(NAMESPACES, key=len, reverse=True):
        if name.startswith(namespace + "."):
            names = modules.get(NAMESPACES[namespace], [])
            member, *more = name[len(namespace) + 1:].split(".")
            if member not in names:
                return False
            has_members = any(n.startswith(member + ".") for n in names)  # e.g. "ScriptedLoadableModule.setup"
            return not (more and has_members) or f"{member}.{more[0]}" in names
        if name == namespace:
            return True
    parts = name.split(".")
    if parts[0] == "slicer" and len(parts) >= 2 and parts[1] in CLASS_KEYS:
        return len(parts) == 2 or parts[2] in modules.get(parts[1], [])
    return None


def _uses(path: Path) -> list[tuple[str, int, bool]]:
    collector = _NameCollector()
    collector.visit(_tree(path))
    return collector.uses


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.name)
def test_api_names_exist_in_slicer_58_and_later(path, api):
    safe = api["modules"]
    newest = api["main"]["modules"]
    missing, uncovered = [], []
    for name, line, guarded in _uses(path):
        root = name.split(".")[0]
        if root in FOREIGN_ROOTS:
            continue
        known = _known(name, safe)
        if known is None:
            if root in ("slicer", "DICOMLib", "ctk"):
                uncovered.append(f"{path.name}:{line} {name}")
            continue
        if not known and not (guarded and _known(name, newest)):
            missing.append(f"{path.name}:{line} {name}")
    assert missing == [], "names not in Slicer 5.8+ (unguarded): " + ", ".join(missing)
    assert uncovered == [], "Slicer names the lists cannot vouch for (add them to RUNTIME_NAMES with a source): " + (
        ", ".join(uncovered)
    )


def test_name_checker_catches_wrong_and_new_names(api):
    modules = api["modules"]
    assert _known("slicer.util.tryWithErrorDisplay", modules) is True
    assert _known("slicer.util.noSuchHelper", modules) is False
    assert _known("DICOMLib.DICOMUtils.loadSeriesByUID", modules) is True
    assert _known("slicer.dicomDatabase.fileValue", modules) is True
    assert _known("slicer.dicomDatabase.instanceValues", modules) is False, "CTK main only"
    assert _known("slicer.packaging.pip_ensure", modules) is False, "5.12+ only"
    assert _known("slicer.packaging.pip_ensure", api["main"]["modules"]) is True
    assert _known("slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode", modules) is True
    assert _known("slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.setup", modules) is True
    assert _known("slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.noSuch", modules) is False
    assert _known("slicer.qSlicerDICOMExportable.setName", modules) is False, "C++ setter, not a slot"


def _members(api: dict, key: str) -> set[str]:
    return {name.split(".")[-1] for name in api["modules"].get(key, [])}


def _self_attributes(cls: ast.ClassDef) -> tuple[set[str], set[tuple[str, int]]]:
    """Names the class defines (methods, self.x assignments) and self.<name> uses."""
    defined = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    used = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            else:
                used.add((node.attr, node.lineno))
    return defined, used


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.name)
def test_inherited_members_exist_in_58_base_classes(path, api):
    bases_to_keys = {
        "DICOMPlugin": ["DICOMLib.DICOMPlugin"],
        "ScriptedLoadableModule": ["slicer.ScriptedLoadableModule"],
        "ScriptedLoadableModuleWidget": ["slicer.ScriptedLoadableModule"],
        "ScriptedLoadableModuleLogic": ["slicer.ScriptedLoadableModule"],
        "ScriptedLoadableModuleTest": ["slicer.ScriptedLoadableModule"],
    }
    tree = _tree(path)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    ours = {n.name: n for f in SLICER_FILES for n in _tree(f).body if isinstance(n, ast.ClassDef)}
    problems = []
    for cls in classes.values():
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        known_bases = [b for b in bases if b in bases_to_keys]
        if not known_bases:
            continue
        allowed: set[str] = set()
        for base in known_bases:
            prefix = {"DICOMPlugin": ""}.get(base, base + ".")
            for key in bases_to_keys[base]:
                allowed |= {n[len(prefix):] for n in api["modules"][key] if n.startswith(prefix)}
            if base == "ScriptedLoadableModuleTest":
                allowed |= set(dir(unittest.TestCase))
            if base == "ScriptedLoadableModuleWidget":
                allowed |= {"ui"}  # assigned in setup()
        for mixin in (b for b in bases if b in ours):  # our own mixins
            allowed |= _self_attributes(ours[mixin])[0]
        if "VTKObservationMixin" in bases:
            allowed |= {"addObserver", "removeObserver", "removeObservers", "observer", "hasObserver"}
        defined, used = _self_attributes(cls)
        for attribute, line in sorted(used):
            if attribute not in defined and attribute not in allowed:
                problems.append(f"{path.name}:{line} {cls.name}: self.{attribute}")
    assert problems == [], "members not defined here nor in the Slicer 5.8 base class: " + ", ".join(problems)


def test_58_plugin_defines_what_only_512_base_has(api):
    """examineFiles/addReferences are 5.12+ base-class methods: our plugin must define them itself."""
    only_new = set(api["added_after_5.8"]["DICOMLib.DICOMPlugin"])
    assert {"examineFiles", "addReferences"} <= only_new
    plugin = next(
        n for n in _tree(MODULE_DIR / "DICOMLabelmapSegPlugin.py").body
        if isinstance(n, ast.ClassDef) and n.name == "DICOMLabelmapSegPluginClass"
    )
    defined = {n.name for n in plugin.body if isinstance(n, ast.FunctionDef)}
    assert {"examineForImport", "examineFiles", "addReferences", "load", "examineForExport", "export"} <= defined


def test_tags_are_added_not_replaced():
    source = (MODULE_DIR / "DICOMLabelmapSegPlugin.py").read_text()
    assert "self.tags.update(" in source and "self.tags = " not in source


# --- plugin registration -----------------------------------------------------------------------------------------


def test_plugin_registration_follows_slicer_convention():
    sys.path.insert(0, str(MODULE_DIR))
    try:
        from DICOMLabelmapSegLib.app import examine
    finally:
        sys.path.remove(str(MODULE_DIR))
    path = MODULE_DIR / "DICOMLabelmapSegPlugin.py"
    assert examine.PLUGIN_KEY == path.stem, "key = file = hidden module class name, as DICOMScalarVolumePlugin"
    tree = _tree(path)
    hook = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == path.stem)
    source = ast.unparse(hook)
    assert "parent.hidden = True" in source
    assert "slicer.modules.dicomPlugins[examine.PLUGIN_KEY] = DICOMLabelmapSegPluginClass" in source
    assert "exportable.pluginClass = examine.PLUGIN_KEY" in path.read_text()


# --- UI, parameter node and CMake ----------------------------------------------------------------------------------

# Widget class -> parameter types it can be bound to (Slicer's parameterNodeWrapper/guiConnectors.py, v5.8.1).
CONNECTORS = {
    "QCheckBox": {"bool"},
    "QLineEdit": {"str"},
    "QComboBox": {"str-choice", "enum"},
    "ctkPathLineEdit": {"Path"},
    "qMRMLNodeComboBox": {"node"},
    "QLabel": {"str"},
}


def _ui_widgets() -> dict[str, tuple[str, str | None]]:
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "DICOMLabelmapSeg.ui").getroot()
    widgets = {}
    for widget in root.iter("widget"):
        parameter = None
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widgets[widget.get("name")] = (widget.get("class"), parameter)
    return widgets


def _parameter_fields() -> dict[str, str]:
    tree = _tree(MODULE_DIR / "DICOMLabelmapSeg.py")
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DICOMLabelmapSegParameterNode")
    fields = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ast.unparse(node.annotation)
            if text.startswith("vtkMRML"):
                kind = "node"
            elif text.startswith("Annotated[str") and "Choice(" in text:
                kind = "str-choice"
            else:
                kind = text
            fields[node.target.id] = kind
    return fields


#: Parameter node fields the panel wires by hand: the output folder is shown in a ctkPathLineEdit that starts
#: empty (a Path field would show '.', the working directory, as if chosen); ``initialized`` has no widget.
UNBOUND_FIELDS = {"outputFolder", "initialized"}


def test_ui_and_parameter_node_agree():
    widgets = _ui_widgets()
    fields = _parameter_fields()
    bound = {parameter: (name, cls) for name, (cls, parameter) in widgets.items() if parameter}
    assert set(bound) == set(fields) - UNBOUND_FIELDS, "every parameter has exactly one widget and vice versa"
    assert fields["outputFolder"] == "str" and fields["initialized"] == "bool"
    for parameter, (name, cls) in bound.items():
        assert fields[parameter] in CONNECTORS.get(cls, set()), f"{name} ({cls}) cannot show {fields[parameter]}"


def test_code_uses_only_widgets_of_the_ui():
    widgets = set(_ui_widgets())
    source = (MODULE_DIR / "DICOMLabelmapSeg.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= widgets, f"unknown widgets: {used - widgets}"


def test_ui_connects_the_scene_to_node_selectors():
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "DICOMLabelmapSeg.ui").getroot()
    selectors = {name for name, (cls, _) in _ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    connected = {
        c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors and selectors <= connected


def _cmake_words(path: Path) -> list[str]:
    text = re.sub(r"#[^\n]*", "", path.read_text())
    return text.replace("(", " ").replace(")", " ").split()


def test_cmake_lists_every_library_file_and_registers_tests():
    words = _cmake_words(MODULE_DIR / "CMakeLists.txt")
    listed = {w.replace("${MODULE_NAME}", "DICOMLabelmapSeg") for w in words if "${MODULE_NAME}" in w or "/" in w}
    library = {
        p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "DICOMLabelmapSegLib").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert library - listed == set(), "add these to MODULE_PYTHON_SCRIPTS in DICOMLabelmapSeg/CMakeLists.txt"
    for entry in listed:
        if entry.endswith((".py", ".png", ".ui", ".txt", ".typed")):
            assert (MODULE_DIR / entry).is_file(), f"CMake lists a missing file: {entry}"
    assert {"DICOMLabelmapSeg.py", "DICOMLabelmapSegPlugin.py"} <= listed
    assert "WITH_GENERIC_TESTS" in words and "slicer_add_python_unittest" in words
    testing = _cmake_words(MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt")
    scripts = [w for w in testing if w.endswith(".py")]
    assert scripts and all((MODULE_DIR / "Testing" / "Python" / s).is_file() for s in scripts)


def test_self_test_classes_are_where_slicer_looks():
    """runTest() of the module instantiates <Module>Test; ctest runs test* methods of TestCase classes."""
    module = _tree(MODULE_DIR / "DICOMLabelmapSeg.py")
    names = {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}
    assert "DICOMLabelmapSegTest" in names
    assert any(f.name.startswith("test_") for f in names["DICOMLabelmapSegTest"].body if isinstance(f, ast.FunctionDef))
    failure = _tree(MODULE_DIR / "Testing" / "Python" / "DICOMLabelmapSegFailureTest.py")
    test_methods = [
        f.name for c in failure.body if isinstance(c, ast.ClassDef) for f in c.body
        if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")
    ]
    assert len(test_methods) >= 6


# --- examining works before the dependencies are installed -------------------------------------------------------


def test_examining_needs_neither_highdicom_nor_slicer(tmp_path, data_dir):
    """Slicer 5.8/5.10 have pydicom 2.4 and no highdicom until the user agrees to install: examining
    SEG files (to show the loadables) must work without them."""
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('highdicom', 'slicer', 'vtk', 'qt', 'ctk'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(MODULE_DIR)!r})
from DICOMLabelmapSegLib.app import examine
specs = examine.loadableSpecsForFiles([{str(data_dir / 'dcmqi' / 'sparse-labelmap-noppv.dcm')!r}])
assert len(specs) == 1 and specs[0].segmentationType == 'LABELMAP', specs
assert 'highdicom' not in sys.modules
print('ok')
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# Imported when Slicer discovers the modules; must at least load on Slicer 5.8 (Python 3.9) to tell the user
# that loading/exporting needs Slicer 5.10+ (instead of failing to load the module).
LOADED_AT_STARTUP = [
    *SLICER_FILES,
    *(MODULE_DIR / "DICOMLabelmapSegLib" / f"{n}.py" for n in (
        "__init__", "errors", "enums", "model", "dicom/__init__", "dicom/syntax", "dicom/options", "app/__init__")),
    *(APP_DIR / f"{n}.py" for n in APP_MODULES),
]


@pytest.mark.parametrize("path", LOADED_AT_STARTUP, ids=lambda p: p.name)
def test_startup_files_parse_with_python_39_grammar(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_startup_imports_are_only_the_light_library_modules():
    """The package __init__ and the use cases the shell imports at start-up import nothing that needs
    pydicom 3, highdicom or Python 3.10 at load time (heavy modules are imported inside functions)."""
    light = {"errors", "enums", "model", "dicom.syntax", "dicom.options", *(f"app.{n}" for n in APP_MODULES)}
    for name, package in (("__init__", ()), *((f"app/{n}", ("app",)) for n in APP_MODULES)):
        tree = _tree(MODULE_DIR / "DICOMLabelmapSegLib" / f"{name}.py")
        top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level >= 1]
        # Relative imports resolved against the library root ("..errors" from app/ is "errors").
        modules = {
            ".".join([*package[: len(package) - (n.level - 1)], *(n.module or "").split(".")]) for n in top_level
        }
        assert modules <= light, f"{name}.py imports {sorted(modules)} at load"


def test_requirements_are_listed_once():
    """Resources/requirements.txt is the one list: the code reads it, CMake ships it, pyproject agrees with it,
    and codec packages live only in the transfer syntax registry."""
    sys.path.insert(0, str(MODULE_DIR))
    try:
        from DICOMLabelmapSegLib.app import dependencies
        from DICOMLabelmapSegLib.dicom.syntax import TransferSyntax
    finally:
        sys.path.remove(str(MODULE_DIR))
    path = MODULE_DIR / "Resources" / "requirements.txt"
    assert dependencies.REQUIREMENTS_FILE == path
    listed = dependencies.readRequirements()
    assert listed and all(re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9][0-9.]*", entry) for entry in listed), listed
    assert "Resources/requirements.txt" in _cmake_words(MODULE_DIR / "CMakeLists.txt")
    names = {entry.split(">=")[0] for entry in listed}
    tree = ast.parse((APP_DIR / "dependencies.py").read_text())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not any(n in literal for n in names for literal in literals if ">=" in literal), "no second list in code"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for entry in listed:
        assert f'"{entry}"' in pyproject, f"pyproject.toml must require {entry} too"
    for syntax in TransferSyntax:  # the registry's packages, offered per syntax, are not repeated here
        for package in (*syntax.missing_encoder_packages(), *syntax.missing_decoder_packages()):
            assert package not in names


# --- checks named by issue 11 -----------------------------------------------------------------------------------


def _functions(path: Path, names: set[str] | None = None) -> list[ast.AST]:
    tree = _tree(path)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and (names is None or n.name in names)]
    return found


def _called_names(nodes: list[ast.AST]) -> set[str]:
    called = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute):
                called.add(sub.attr)
            elif isinstance(sub, ast.Name):
                called.add(sub.id)
    return called


def test_no_load_path_loads_the_referenced_series():
    """The browser asks about referenced series; loading a SEG must never load them itself."""
    plugin = MODULE_DIR / "DICOMLabelmapSegPlugin.py"
    paths = [*_functions(plugin, {"load", "examineFiles", "examineForImport", "addReferences"}),
             *_functions(APP_DIR / "load.py"), *_functions(APP_DIR / "examine.py")]
    panel = _functions(MODULE_DIR / "DICOMLabelmapSeg.py", {"loadSegFiles", "onImportButton"})
    called = _called_names([*paths, *panel])
    forbidden = {"loadSeriesByUID", "loadByInstanceUID", "loadSeriesWithVerification", "loadPatient", "loadLoadables"}
    assert len(paths) >= 8 and not called & forbidden, sorted(called & forbidden)


def _test_classes() -> list[ast.ClassDef]:
    classes = []
    failure = MODULE_DIR / "Testing" / "Python" / "DICOMLabelmapSegFailureTest.py"
    for path in (MODULE_DIR / "DICOMLabelmapSeg.py", failure):
        classes += [n for n in _tree(path).body if isinstance(n, ast.ClassDef) and "Test" in n.name]
    return classes


def test_no_pip_in_test_code():
    classes = _test_classes()
    expected = {"DICOMLabelmapSegTestMixin", "DICOMLabelmapSegTest", "DICOMLabelmapSegFailureTest"}
    assert {c.name for c in classes} >= expected
    called = _called_names(classes)
    installers = {"installPackages", "ensurePythonPackages"}
    pip = sorted(name for name in called if "pip" in name.lower() or name in installers)
    assert pip == [], f"self-tests must skip what is missing, never install: {pip}"


def test_every_syntax_the_self_tests_use_is_guarded_by_a_codec_check():
    """Syntaxes come only from dependencies.syntaxesUsableHere() (write and read both possible here)."""
    classes = _test_classes()
    text = "\n".join(ast.unparse(c) for c in classes)
    assert "self.syntaxes, skipped = dependencies.syntaxesUsableHere()" in text
    for cls in classes:
        for node in ast.walk(cls):
            if isinstance(node, ast.For):
                names = {n.id for n in ast.walk(node.iter) if isinstance(n, ast.Name)}
                assert "TransferSyntax" not in names, f"{cls.name}: iterates all syntaxes"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert node.value.id != "TransferSyntax", f"{cls.name}:{node.lineno} uses a fixed syntax"
    loops = [ast.unparse(n.iter) for c in classes for n in ast.walk(c) if isinstance(n, ast.For)]
    assert any("self.syntaxes" in loop for loop in loops)


def test_ui_output_folder_reference_selector_and_enabled_state():
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "DICOMLabelmapSeg.ui").getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}

    def prop(name, key):
        for p in widgets[name].findall("property"):
            if p.get("name") == key:
                return "".join(p.itertext()).strip()
        return None

    assert "ctkDirectoryButton" not in {w.get("class") for w in widgets.values()}, "it shows '.' as if chosen"
    assert widgets["outputFolderPathLineEdit"].get("class") == "ctkPathLineEdit"
    assert "Dirs" in prop("outputFolderPathLineEdit", "filters")
    assert prop("outputFolderPathLineEdit", "enabled") == "false", "disabled until 'Folder' is checked"
    toggles = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
               for c in root.iter("connection")]
    assert ("exportToFolderCheckBox", "toggled(bool)", "outputFolderPathLineEdit", "setEnabled(bool)") in toggles
    assert prop("referenceVolumeSelector", "showChildNodeTypes") == "false", "no labelmaps or vector volumes"
    assert prop("exportToFolderCheckBox", "checked") in (None, "false")


def test_progress_dialog_is_parented_and_kept_open():
    source = ast.unparse(next(n for n in _tree(MODULE_DIR / "DICOMLabelmapSegPlugin.py").body
                              if isinstance(n, ast.ClassDef) and n.name == "ProgressDialog"))
    assert "activeModalWidget()" in source and "parent=parent" in source
    assert "autoClose=False" in source and "autoReset=False" in source and "progressValue(" in source


def test_errors_are_shown_once_and_results_checked():
    panel = (MODULE_DIR / "DICOMLabelmapSeg.py").read_text()
    plugin = (MODULE_DIR / "DICOMLabelmapSegPlugin.py").read_text()
    assert "tryWithErrorDisplay" not in panel + plugin, "it shows the error and re-raises into the caller's display"
    assert "if not DICOMUtils.importDicom(" in panel, "the database import result is checked"
    assert "if export.dicomBrowserIsOpen(slicer.modules):\n                    DICOMUtils.refreshDICOMWidget()" in panel
    load = ast.unparse(_functions(MODULE_DIR / "DICOMLabelmapSegPlugin.py", {"load"})[0])
    assert "errorDisplay" not in load, "the browser shows 'Could not load' itself"
    ensure = ast.unparse(_functions(MODULE_DIR / "DICOMLabelmapSegPlugin.py", {"ensurePythonPackages"})[0])
    assert "errorDisplay" not in ensure and "infoDisplay" not in ensure, "callers show the one message"


def test_settings_panel_entry_is_a_static_method_on_the_plugin_class():
    plugin = next(n for n in _tree(MODULE_DIR / "DICOMLabelmapSegPlugin.py").body
                  if isinstance(n, ast.ClassDef) and n.name == "DICOMLabelmapSegPluginClass")
    entry = next(f for f in plugin.body if isinstance(f, ast.FunctionDef) and f.name == "settingsPanelEntry")
    assert [d.id for d in entry.decorator_list if isinstance(d, ast.Name)] == ["staticmethod"]
    assert [a.arg for a in entry.args.args] == ["panel", "parent"]
    text = ast.unparse(entry)
    assert "settings.SETTINGS_TRANSFER_SYNTAX" in text and "settings.SETTINGS_PALETTE_COLOR" in text


def test_panel_writes_settings_only_on_export():
    tree = _tree(MODULE_DIR / "DICOMLabelmapSeg.py")
    writers = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and "setValue" in ast.unparse(f)
               and f.name not in {"tearDown", "exportAndCheckFiles"}]
    assert writers == ["saveSettings"]
    callers = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and "saveSettings(" in ast.unparse(f)
               and f.name != "saveSettings"]
    assert callers == ["exportToDicom"], "not per keystroke (onParameterNodeModified), not on module entry"


def test_cmake_versions_publishing_marker_and_index_entry():
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"cmake_minimum_required\(VERSION 3\.20\.6\.\.\.3\.28\)", top), "Slicer 5.10 builds with 3.20.6"
    marker = re.search(r'set\(DICOMLabelmapSeg_PUBLISHING_MARKER "([^"]+)"\)', top).group(1)
    urls = re.findall(r"https://[^\s\")]+", top)
    assert urls and all(marker in url for url in urls), "every repository address comes from the one placeholder"
    assert 'set(EXTENSION_SCREENSHOTURLS "")' in top, "no screenshot URL until a real screenshot exists"
    assert 'install(CODE "message(FATAL_ERROR' in top and "MATCHES" in top, "packaging fails while the marker remains"
    entry = json.loads((ROOT / "ExtensionsIndex" / "DICOMLabelmapSeg.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # schema 1.0.2
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["category"] == re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', top).group(1)
    assert marker in entry["scm_url"], "scm_url is the same placeholder (replace both)"
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert "1.2.840.10008.5.1.4.1.1.66.7" in entry["dicom_support_rule"]


def test_cmake_configure_warns_and_packaging_fails_while_the_marker_remains(tmp_path):
    """Run the marker check of the top-level CMakeLists.txt in CMake script mode (no Slicer needed)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    top = (ROOT / "CMakeLists.txt").read_text()
    block = top[top.index("set(DICOMLabelmapSeg_PUBLISHING_MARKER"):top.index("set(EXTENSION_HOMEPAGE")]
    check = top[top.index("if(DICOMLabelmapSeg_REPOSITORY_URL MATCHES"):]
    check = check[:check.index("endif()") + len("endif()")]
    script = tmp_path / "check.cmake"
    script.write_text(block + "macro(install)\n  message(STATUS \"INSTALL-HOOK ${ARGN}\")\nendmacro()\n" + check)
    result = subprocess.run([cmake, "-P", str(script)], capture_output=True, text=True)
    assert "placeholder" in result.stderr and "INSTALL-HOOK CODE" in result.stdout + result.stderr
    script.write_text(block.replace("REPLACE-WITH-REPOSITORY-OWNER/", "someone/") + check)
    result = subprocess.run([cmake, "-P", str(script)], capture_output=True, text=True)
    assert result.returncode == 0 and "placeholder" not in result.stderr


def test_self_test_downloads_are_pinned_to_the_local_copies():
    """The self-test's public files (fixed commits) have the SHA-256 of the copies in the shared test data."""
    import hashlib

    tree = _tree(MODULE_DIR / "DICOMLabelmapSeg.py")
    pinned = {
        t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
        for t in n.targets if isinstance(t, ast.Name) and t.id.startswith("TOTALSEGMENTATOR_")
    }
    assert set(pinned) == {"TOTALSEGMENTATOR_CT", "TOTALSEGMENTATOR_LABELMAP"}
    local = {
        "TOTALSEGMENTATOR_CT": "example_ct.nii.gz",
        "TOTALSEGMENTATOR_LABELMAP": "example_seg_fast_force_split.nii.gz",
    }
    for name, (url, cacheName, checksum) in pinned.items():
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/wasserth/TotalSegmentator/[0-9a-f]{40}/tests/"
                            r"reference_files/[\w.]+", url), url
        assert url.endswith(local[name]) and cacheName.endswith(local[name])
        path = _data_root() / "totalsegmentator" / local[name]
        if not path.is_file():
            pytest.skip(f"{path} not found")
        assert checksum == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_use_cases_are_qt_and_slicer_free_and_the_hierarchy_has_one_route():
    """app/ receives slicer objects as arguments; MRML work (and subject hierarchy placement) is in mrml.py."""
    for path in sorted(APP_DIR.glob("*.py")):
        tree = _tree(path)
        imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                     and n.level == 0}
        assert not imported & {"slicer", "vtk", "qt", "ctk", "DICOMLib"}, f"{path.name} imports {imported}"
    library = MODULE_DIR / "DICOMLabelmapSegLib"
    placing = sorted(
        p.relative_to(library).as_posix() for p in library.rglob("*.py")
        if "InsertDicomSeriesInHierarchy" in p.read_text() or "CreateStudyItem" in p.read_text()
    )
    assert placing == ["mrml.py"], placing
    shell = (MODULE_DIR / "DICOMLabelmapSeg.py").read_text() + (MODULE_DIR / "DICOMLabelmapSegPlugin.py").read_text()
    assert "InsertDicomSeriesInHierarchy" not in shell and "CreateStudyItem" not in shell


def test_examining_uses_the_one_header_parser():
    """No second SEG header parser in the Slicer layer: segments and type come from dicom/header.py."""
    source = (APP_DIR / "examine.py").read_text()
    assert "parse_header(" in source
    for keyword in ("SegmentSequence", "SegmentNumber", "SegmentedPropertyCategoryCodeSequence"):
        assert keyword not in source, f"examine.py reads {keyword} itself"
    shell = (MODULE_DIR / "DICOMLabelmapSegPlugin.py").read_text()
    assert "dcmread" not in shell and "SegmentSequence" not in shell
