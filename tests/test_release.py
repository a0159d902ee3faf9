"""What a release promises: licences named where users look, one version on every command, docs
that speak of the product, commands that agree, inputs people use, and a clean package."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hmer_runtime import __version__
from hmer_runtime.engine.model_spec import LICENSE_FILE, ModelSpec
from hmer_runtime.recognizer import BUNDLED_MODEL

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


# --- licences ----------------------------------------------------------------------------------

def test_the_code_and_the_weights_licences_are_named_in_the_package_metadata():
    project = PYPROJECT["project"]
    assert "Apache-2.0" in project["license"] and "CC-BY-NC-SA-3.0" in project["license"]
    for name in project["license-files"]:
        assert (ROOT / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["hmer_runtime"]
    assert f"models/default/{LICENSE_FILE}" in data


def test_the_bundled_weights_carry_their_terms_in_model_json_and_beside_the_graphs():
    spec = ModelSpec.load(BUNDLED_MODEL)
    assert spec.license["spdx"] == "CC-BY-NC-SA-3.0"
    assert "non-commercial" in spec.license["notice"] and "CROHME" in spec.license["notice"]
    text = (BUNDLED_MODEL / LICENSE_FILE).read_text()
    assert "CC-BY-NC-SA-3.0" in text and "CROHME" in text


def test_an_export_writes_the_runs_terms_into_model_json_the_graphs_and_a_licence_file(tmp_path):
    import onnx
    from tiny import random_checkpoint

    from hmer_export.exporter import ExportOptions, export_checkpoint

    ckpt = random_checkpoint(tmp_path, "comer")  # trained on a folder of its own, which names no terms
    raw = export_checkpoint(ckpt, tmp_path / "model", ExportOptions(check=False), log=lambda s: None)
    assert raw["license"]["spdx"] == "NOASSERTION"
    assert "did not name" in (tmp_path / "model" / LICENSE_FILE).read_text()
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model" / "encoder.onnx")).metadata_props}
    assert meta["license"].startswith("NOASSERTION: ")
    assert json.loads(meta["hmer.model"])["license"] == raw["license"]


def test_a_run_can_name_its_own_weights_licence_and_a_bad_one_is_refused():
    from hmer_train.config import Config, ConfigError
    from hmer_train.licences import weights_license

    assert weights_license(Config())["spdx"] == "CC-BY-NC-SA-3.0"  # CROHME's terms
    own = Config().updated({"license": {"spdx": "CC-BY-4.0", "notice": "Trained on our own drawings."}})
    assert weights_license(own)["spdx"] == "CC-BY-4.0"
    assert weights_license(Config(dataset="somewhere/else"))["spdx"] == "NOASSERTION"
    with pytest.raises(ConfigError, match="license"):
        Config().updated({"license": {"owner": "me"}})


# --- one version, on every command -----------------------------------------------------------

def test_every_command_answers_version_with_the_one_version():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hmer_runtime.__version__"}
    for command in PYPROJECT["project"]["scripts"]:
        p = subprocess.run([str(BIN / command), "--version"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (command, p.stderr)
        assert p.stdout.strip() == f"{command} {__version__}", command


def test_a_command_without_its_extra_says_which_one_to_install(tmp_path):
    """As in a runtime-only install: torch cannot be imported, and the command says so in one line."""
    script = ("import sys; sys.modules['torch'] = None; sys.argv = ['hmer-eval', 'x.pt', 'data']\n"
              "from hmer_train.commands import evaluate; evaluate()")
    (tmp_path / "data").mkdir()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "error: hmer-eval needs the train extra: pip install 'hmer[train]' (module torch is not installed)"]


# --- docs and code speak of the product ---------------------------------------------------------

NARRATION = re.compile(r"\bissues? #?\d+|\bsessions? \d+|\b(this|that|next|previous|each|every|later|earlier|"
                       r"working|time-boxed|one|a) session\b", re.IGNORECASE)
TEXT_SUFFIXES = {".md", ".py", ".js", ".html", ".css", ".yaml", ".yml", ".toml", ".sh", ".txt", ""}


def test_no_file_speaks_of_sessions_or_issue_numbers():
    found = []
    for path in tracked_files():
        if path.suffix not in TEXT_SUFFIXES or path.stat().st_size > 2_000_000 or "vendor" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".md":  # docs: no working sessions at all
            hits = re.findall(r"\bsessions?\b", text, re.IGNORECASE) + [m.group(0) for m in NARRATION.finditer(text)]
        else:
            hits = [m.group(0) for m in NARRATION.finditer(text)]
        if hits and path.name != Path(__file__).name:
            found.append(f"{path.relative_to(ROOT)}: {hits[:3]}")
    assert not found, "\n".join(found)


def test_the_changelog_lists_the_current_version():
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


# --- packaging -----------------------------------------------------------------------------------

def test_every_folder_that_ships_files_is_a_listed_package():
    """setuptools warns once per data folder missing from ``packages``; list them all."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    dirs = {"hmer_runtime": ROOT / "hmer_runtime", "hmer_train": ROOT / "hmer_train",
            "hmer_export": ROOT / "export", "hmer_bench": ROOT / "benchmarks"}
    tracked = set(tracked_files())
    for package, root in dirs.items():
        for folder in [root, *[d for d in root.rglob("*") if d.is_dir()]]:
            if "__pycache__" in folder.parts or not any(f.parent == folder for f in tracked):
                continue
            name = ".".join([package, *folder.relative_to(root).parts])
            assert name in listed, f"{name} ships files but is not in [tool.setuptools] packages"


def test_the_web_build_chooses_int8_when_the_card_puts_it_within_a_point(tiny_model_dir, tmp_path):
    import shutil

    from hmer_export.web import choose_variant

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    from hmer_export.variants import quantize_int8

    quantize_int8(model / "decoder.onnx", model / "decoder.int8.onnx")
    raw = json.loads((model / "model.json").read_text())
    raw["variants"]["int8"] = {**raw["variants"]["fp32"], "decoder": "decoder.int8.onnx"}
    figures = {"n": 10, "le1": 0, "le2": 0, "wer": 0}
    raw["evaluation"] = {"crohme-2014 onnx fp32 beam 1": {**figures, "exprate": 47.2},
                         "crohme-2014 onnx fp32 beam 10": {**figures, "exprate": 53.3},  # no int8 twin
                         "crohme-2014 onnx int8 beam 1": {**figures, "exprate": 47.0}}
    (model / "model.json").write_text(json.dumps(raw))
    assert choose_variant(ModelSpec.load(model)) == "int8"
    raw["evaluation"]["crohme-2014 onnx int8 beam 1"]["exprate"] = 45.0  # 2.2 points off: fp32
    (model / "model.json").write_text(json.dumps(raw))
    assert choose_variant(ModelSpec.load(model)) == "fp32"


# --- hmer-run: the inputs and outputs people use -----------------------------------------------

def run_hmer(args, cwd=None):
    from hmer_runtime.cli_run import main

    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, args)
    before = os.getcwd()
    os.chdir(cwd)  # as a user running it from another folder
    try:
        return runner.invoke(main, args)
    finally:
        os.chdir(before)


def test_hmer_run_reads_the_repositorys_stroke_json(tiny_model_dir):
    strokes = sorted((ROOT / "examples" / "strokes").glob("*.json"))
    r = run_hmer([*map(str, strokes), "--model", str(tiny_model_dir), "--beam", "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["file"] for row in rows] == [str(s) for s in strokes] and all("latex" in row for row in rows)


def test_bad_stroke_json_fails_only_that_file(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"strokes": [[[0, NaN]]]}')
    good = ROOT / "examples" / "strokes" / "x2.json"
    r = run_hmer([str(bad), str(good), "--model", str(tiny_model_dir), "--beam", "1"])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert any(line.startswith(f"error: {bad}: not stroke JSON") for line in lines)
    assert any(line.startswith(f"{good}\t") for line in lines)


def test_several_inputs_name_their_files_and_compact_latex_is_an_option(tmp_path):
    x2 = ROOT / "hmer_runtime" / "samples" / "x2.png"
    abc = ROOT / "hmer_runtime" / "samples" / "abc.png"
    r = run_hmer([str(x2), str(abc), "--beam", "1", "--compact"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [f"{x2}\tx^{{2}}+2x+1", f"{abc}\ta+b=c"]
    one = run_hmer([str(x2), "--beam", "1"])
    assert one.output.splitlines() == ["x ^ { 2 } + 2 x + 1"]  # one input: just its LaTeX


def test_paths_in_a_list_file_are_relative_to_the_list(tiny_model_dir, tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "a.json").write_text((ROOT / "examples" / "strokes" / "x2.json").read_text())
    (folder / "inputs.txt").write_text("a.json\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_hmer([f"@{folder / 'inputs.txt'}", "--model", str(tiny_model_dir), "--beam", "1", "--json"],
                 cwd=elsewhere)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["file"] == str(folder / "a.json")


def test_progress_bar_on_request_steps_aside_for_results(tiny_model_dir):
    strokes = [str(s) for s in sorted((ROOT / "examples" / "strokes").glob("*.json"))]
    from hmer_runtime.cli_run import main

    r = CliRunner().invoke(main, [*strokes, "--model", str(tiny_model_dir), "--beam", "1",
                                                  "--progress"])
    assert r.exit_code == 0
    assert f"{len(strokes)}/{len(strokes)} files" in r.stderr and len(r.stdout.splitlines()) == len(strokes)
    quiet = CliRunner().invoke(main, [*strokes, "--model", str(tiny_model_dir), "--beam", "1"])
    assert quiet.stderr == ""  # not a terminal: no bar


def test_common_flags_have_one_name_on_every_command():
    from hmer_bench.latency import main as bench
    from hmer_runtime.cli_run import main as run
    from hmer_runtime.serving.cli_serve import main as serve
    from hmer_runtime.serving.ray_batch import main as batch
    from hmer_train.cli_eval import main as evaluate

    def options(command):
        return {name: p for p in command.params for name in p.opts}

    for command in (run, evaluate, bench, batch, serve):
        provider = options(command)["--provider"]
        assert provider.default == "auto", command.name
    for command in (evaluate, batch):
        assert {"-o", "--output"} <= set(options(command)), command.name
    for command in (run, evaluate, batch):
        assert "--limit" in options(command) and "--batch-size" in options(command), command.name
    for command in (run, evaluate, bench):
        assert options(command)["--json"].is_flag, command.name
    parsed = evaluate.make_context("hmer-eval", ["model", "data"])
    assert parsed.params["beam"] is None  # the model's own decoding, as hmer-run


def test_the_facade_exports_what_the_readme_uses(tmp_path):
    import hmer_runtime

    for name in hmer_runtime.__all__:
        assert getattr(hmer_runtime, name) is not None
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```python\nfrom hmer_runtime import ProviderConfig, Recognizer\n")[1].split("```")[0]
    sample = ROOT / "hmer_runtime" / "samples" / "x2.png"
    code = ("from hmer_runtime import ProviderConfig, Recognizer\n"
            + block.replace('"photo.jpg"', repr(str(sample))).replace('"out/"', "None")
            .replace("paths", f"[{str(sample)!r}]"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("x ^ { 2 } + 2 x + 1 ")


def _project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at the top or inside functions), from the source."""
    import ast

    roots = {"hmer_runtime": ROOT / "hmer_runtime", "hmer_train": ROOT / "hmer_train", "hmer_export": ROOT / "export"}
    modules = {}
    for package, folder in roots.items():
        for f in folder.rglob("*.py"):
            parts = [package, *f.relative_to(folder).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (f, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_import_circles():
    graph = _project_imports()
    assert "hmer_train.models.comer" in graph and "hmer_runtime.serving.serve" in graph
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_a_limited_evaluation_prepares_only_what_it_reads(tmp_path):
    from synth import write_inkml_set

    from hmer_train.prepared import prepare

    write_inkml_set(tmp_path / "data", [list("x+1"), list("2-y"), list("x=7"), list("1+2")])
    cache = tmp_path / "cache"
    first = prepare(tmp_path / "data", cache_root=cache, progress=False, workers=0, limit=2)
    assert len(first) == 2 and [d.name.endswith("-first2") for d in cache.iterdir()] == [True]
    whole = prepare(tmp_path / "data", cache_root=cache, progress=False, workers=0)
    assert len(whole) == 4 and first.names == whole.names[:2]
    again = prepare(tmp_path / "data", cache_root=cache, progress=False, workers=0, limit=3)  # from the whole set
    assert again.names == whole.names[:3]


@pytest.mark.skipif(not shutil.which("node"), reason="node not installed")
def test_the_browsers_compact_latex_is_the_runtimes(tmp_path):
    from hmer_runtime.text.latex import compact

    cases = [["x", "^", "{", "2", "}", "+", "2", "x", "+", "1"], ["\\sin", "x", "+", "\\cos", "\\theta"],
             ["\\frac", "{", "a", "}", "{", "\\pi", "r", "}"], ["\\lim", "_", "{", "n", "\\rightarrow", "\\infty", "}"]]
    script = ("require(process.argv[1]); const cases = JSON.parse(process.argv[2]);"
              "console.log(JSON.stringify(cases.map(c => globalThis.hmer.compact(c))));")
    p = subprocess.run(["node", "-e", script, str(ROOT / "hmer_runtime" / "static" / "hmer.js"), json.dumps(cases)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [compact(c) for c in cases]
