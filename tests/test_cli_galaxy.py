"""The Galaxy tools in galaxy/, run the way Galaxy runs them, without Galaxy.

``planemo test`` needs conda and a Galaxy download, which are not available offline. Instead each
tool's ``<command>`` is rendered with Cheetah (the template engine Galaxy uses) from the values
in each of its ``<tests>``, its lines joined as Galaxy joins them, and run with bash; then the
test's assertions (``has_h5_keys``, ``has_text``, ...) are checked on the outputs. Galaxy's
macro expansion (``<expand>``, ``<yield/>``, tokens) and parameter rendering (booleans as their
true/false values, data tables' ``fields``, unset optional values) are reproduced here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import pytest

Cheetah = pytest.importorskip("Cheetah.Template", reason="the test extra installs ct3")

GALAXY = Path(__file__).resolve().parents[1] / "galaxy"
TOOLS = sorted(GALAXY.glob("*.xml")) + sorted((GALAXY / "data_manager").glob("*.xml"))
TOOLS = [t for t in TOOLS if t.name not in ("macros.xml", "data_manager_conf.xml")]
TIMEOUT = 900  # bounds a hung run on a loaded machine; times nothing


# --- macros ------------------------------------------------------------------------------------


def _macros(root: ET.Element, folder: Path) -> tuple[dict, dict]:
    xml, tokens = {}, {}
    block = root.find("macros")
    sources = [] if block is None else [block]
    if block is not None:
        for imp in block.findall("import"):
            sources.append(ET.parse(folder / imp.text.strip()).getroot())
    for src in sources:
        for m in src.findall("xml"):
            xml[m.get("name")] = m
        for t in src.findall("token"):
            tokens[t.get("name")] = t.text or ""
    return xml, tokens


def _sub_tokens(el: ET.Element, tokens: dict) -> None:
    def sub(text):
        if text is None:
            return None
        for _ in range(5):  # tokens inside tokens
            new = text
            for k, v in tokens.items():
                new = new.replace(k, v)
            if new == text:
                break
            text = new
        return text

    for e in el.iter():
        e.text, e.tail = sub(e.text), sub(e.tail)
        for k, v in e.attrib.items():
            e.attrib[k] = sub(v)


def _expand(el: ET.Element, xml: dict) -> None:
    for i, child in enumerate(list(el)):
        if child.tag != "expand":
            _expand(child, xml)
            continue
        macro = copy.deepcopy(xml[child.get("macro")])
        local = {
            f"@{k[len('token_') :].upper()}@": child.get(k[len("token_") :], v)
            for k, v in xml[child.get("macro")].attrib.items()
            if k.startswith("token_")
        }
        _sub_tokens(macro, local)
        _expand(child, xml)  # expansions among the content given to <yield/>
        inner = list(child)
        body = []
        for m in list(macro):
            if m.tag == "yield":
                body += copy.deepcopy(inner)
            else:
                _replace_yield(m, inner)
                body.append(m)
        for b in body:
            _expand(b, xml)
        el.remove(child)
        for j, b in enumerate(body):
            el.insert(i + j, b)
        _expand(el, xml)  # positions moved: start over (expansions are finite)
        return


def _replace_yield(el: ET.Element, inner: list) -> None:
    for i, c in enumerate(list(el)):
        if c.tag == "yield":
            el.remove(c)
            for j, x in enumerate(copy.deepcopy(inner)):
                el.insert(i + j, x)
        else:
            _replace_yield(c, inner)


def load_tool(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    xml, tokens = _macros(root, path.parent)
    _expand(root, xml)
    _sub_tokens(root, tokens)
    return root


# --- parameter values as Galaxy renders them ---------------------------------------------------


class Value(str):
    """A parameter as Cheetah sees it: its text, its truth (Galaxy: the value's), attributes."""

    def __new__(cls, text, truth=None, **attrs):
        obj = super().__new__(cls, text)
        obj._truth = bool(text) if truth is None else truth
        obj.__dict__.update(attrs)
        return obj

    def __bool__(self):
        return self._truth


class Group(dict):
    """A conditional or section: its parameters as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _data_tables() -> dict[str, list[dict]]:
    conf = ET.parse(GALAXY / "tool_data_table_conf.xml.test").getroot()
    tables = {}
    for t in conf.findall("table"):
        cols = [c.strip() for c in t.find("columns").text.split(",")]
        loc = Path(t.find("file").get("path").replace("${__HERE__}", str(GALAXY)))
        rows = [
            dict(zip(cols, line.rstrip("\n").split("\t"), strict=True))
            for line in loc.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        tables[t.get("name")] = rows
    return tables


def _param_value(p: ET.Element, given: str | None, ftype: str | None):
    kind = p.get("type")
    optional = p.get("optional") == "true"
    if kind == "data":
        if given is None:
            return Value("None", False)
        path = GALAXY / "test-data" / given
        assert path.exists(), path
        return Value(str(path), True, ext=ftype or p.get("format"), element_identifier=given)
    if kind == "boolean":
        truth = p.get("checked", "false").lower() in ("true", "yes")
        if given is not None:
            truth = given.lower() in ("true", "yes", (p.get("truevalue") or "true").lower())
        text = p.get("truevalue", "true") if truth else p.get("falsevalue", "false")
        return Value(text, truth, kind="boolean")
    if kind == "select":
        options = p.find("options")
        if options is not None and options.get("from_data_table"):
            rows = _data_tables()[options.get("from_data_table")]
            row = next(r for r in rows if r["value"] == given)
            return Value(given, True, fields=Group(row))
        choices = [o.get("value") for o in p.findall("option")]
        if given is None:
            chosen = [o.get("value") for o in p.findall("option") if o.get("selected") == "true"]
            given = chosen[0] if chosen else (None if optional else choices[0])
        if given is None:
            return Value("None", False)
        assert given in choices, (p.get("name"), given, choices)
        return Value(given, True)
    value = given if given is not None else p.get("value", "")
    if kind in ("integer", "float") and value == "":
        assert optional, f"{p.get('name')} has no value and is not optional"
        return Value("None", False)
    if kind in ("integer", "float"):
        number = int(value) if kind == "integer" else float(value)
        return Value(value, bool(number))
    return Value(value)


def _params(block: ET.Element, given: dict, prefix: str = "") -> Group:
    ns = Group()
    for child in block:
        name = child.get("name")
        key = prefix + (name or "")
        if child.tag == "param":
            value, ftype = given.get(key, (None, None))
            ns[name] = _param_value(child, value, ftype)
        elif child.tag == "conditional":
            test_param = child.find("param")
            sel = _param_value(
                test_param, given.get(f"{key}|{test_param.get('name')}", (None,))[0], None
            )
            group = _params(child.find(f"when[@value='{sel}']"), given, f"{key}|")
            group[test_param.get("name")] = sel
            ns[name] = group
        elif child.tag == "section":
            ns[name] = _params(child, given, f"{key}|")
    return ns


def _test_values(block: ET.Element, prefix: str = "") -> dict:
    out = {}
    for child in block:
        if child.tag == "param":
            out[prefix + child.get("name")] = (child.get("value"), child.get("ftype"))
        elif child.tag in ("conditional", "section"):
            out.update(_test_values(child, f"{prefix}{child.get('name')}|"))
    return out


def _plain(ns):
    """Values as output filters see them: booleans as bools, the rest as text."""
    if isinstance(ns, Group):
        return {k: _plain(v) for k, v in ns.items()}
    return bool(ns) if getattr(ns, "kind", "") == "boolean" else str(ns)


# --- assertions --------------------------------------------------------------------------------


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmM]?)", text.strip())
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()]


def check(assertion: ET.Element, path: Path) -> None:
    tag = assertion.tag
    if tag == "has_h5_keys":
        with h5py.File(path, "r") as f:
            for key in assertion.get("keys").split(","):
                assert key.strip() in f, f"{path.name} lacks {key}"
    elif tag == "has_archive_member":
        with tarfile.open(path) as tar:
            assert assertion.get("path") in tar.getnames(), tar.getnames()
    elif tag == "has_size":
        if assertion.get("min"):
            assert path.stat().st_size >= _size(assertion.get("min"))
        if assertion.get("max"):
            assert path.stat().st_size <= _size(assertion.get("max"))
    elif tag == "has_text":
        assert assertion.get("text") in path.read_text(errors="replace"), assertion.get("text")
    elif tag == "has_n_lines":
        assert len(path.read_text().splitlines()) == int(assertion.get("n"))
    else:
        raise AssertionError(f"assertion <{tag}> is not implemented by this harness")


# --- running -----------------------------------------------------------------------------------


def _cases():
    for tool in TOOLS:
        root = load_tool(tool)
        for i, _ in enumerate(root.find("tests").findall("test")):
            yield pytest.param(tool, i, id=f"{tool.stem}-{i + 1}")


def _shim(folder: Path) -> dict:
    """``sctransformer`` on PATH, the one of this interpreter and source tree."""
    folder.mkdir()
    exe = folder / "sctransformer"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sctransformer "$@"\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "GALAXY_SLOTS": "1"}


def run_tool_test(tool: Path, index: int, tmp_path: Path) -> dict[str, Path]:
    from Cheetah.Template import Template

    root = load_tool(tool)
    test = root.find("tests").findall("test")[index]
    ns = _params(root.find("inputs"), _test_values(test))
    plain = _plain(ns)
    outputs = {}
    for data in root.find("outputs").findall("data"):
        flt = data.find("filter")
        if flt is not None and not eval(flt.text, {}, dict(plain)):  # Galaxy evaluates it too
            continue
        path = tmp_path / "outputs" / f"{data.get('name')}.dat"
        path.parent.mkdir(exist_ok=True)
        path.write_text("")  # Galaxy creates every output before the job runs
        ns[data.get("name")] = Value(
            str(path),
            True,
            extra_files_path=str(tmp_path / "outputs" / f"{data.get('name')}_files"),
        )
        outputs[data.get("name")] = path
    expect = test.get("expect_num_outputs")
    if expect is not None:
        assert len(outputs) == int(expect), sorted(outputs)
    ns["__tool_directory__"] = str(tool.parent)
    job = tmp_path / "job"
    job.mkdir()
    configfiles = root.find("configfiles")
    for cf in [] if configfiles is None else configfiles.findall("configfile"):
        path = job / f"configfile_{cf.get('name')}"
        path.write_text(str(Template(cf.text, searchList=[ns])))
        ns[cf.get("name")] = Value(str(path))
    command = str(Template(root.find("command").text, searchList=[ns]))
    command = command.replace("\n", " ").replace("\r", " ").strip()  # as Galaxy does
    res = subprocess.run(
        ["bash", "-c", command],
        cwd=job,
        env=_shim(tmp_path / "bin"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
    for out in test.findall("output"):
        path = outputs[out.get("name")]
        assert path.stat().st_size > 0, out.get("name")
        block = out.find("assert_contents")
        for assertion in [] if block is None else block:
            check(assertion, path)
    return outputs


@pytest.mark.parametrize(("tool", "index"), list(_cases()))
def test_galaxy_tool(tool, index, tmp_path):
    run_tool_test(tool, index, tmp_path)
    if tool.parent.name == "data_manager":
        # the data-table entry points at a folder beside the JSON that is a loadable model
        import sctransformer as sct

        out = tmp_path / "outputs"
        entry = json.loads((out / "out_file.dat").read_text())["data_tables"]
        (row,) = entry["sctransformer_models"]
        folder = out / "out_file_files" / row["path"]
        assert sct.models.load(folder).metadata["name"] == row["value"]


def test_every_tool_is_tested_and_calls_the_cli_with_galaxy_slots():
    names = {t.stem for t in TOOLS}
    assert {
        "sctransformer_embed",
        "sctransformer_pretrain",
        "sctransformer_annotate",
        "sctransformer_grn",
        "sctransformer_perturb",
        "sctransformer_plot_heads",
        "sctransformer_models_fetcher",
    } <= names
    for tool in TOOLS:
        root = load_tool(tool)
        command = root.find("command")
        assert command.get("detect_errors") == "exit_code", tool.name
        assert root.find("tests").findall("test"), tool.name
        if tool.parent == GALAXY:
            assert "--threads ${GALAXY_SLOTS:-1}" in command.text.replace("\\$", "$"), tool.name
        if tool.parent == GALAXY and tool.stem != "sctransformer_pretrain":
            # a model from the data table or from the history
            inputs = ET.tostring(root.find("inputs"), encoding="unicode")
            assert 'from_data_table="sctransformer_models"' in inputs, tool.name
            assert 'format="tar"' in inputs, tool.name
        version = root.get("version")
        from sctransformer._version import __version__

        assert version.startswith(f"{__version__}+galaxy"), (tool.name, version)


def test_test_data_stays_small():
    total = sum(f.stat().st_size for f in (GALAXY / "test-data").iterdir())
    assert total < 2e6, total
