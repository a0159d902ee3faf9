"""``hmer-web build MODEL_DIR OUT_DIR``: the recogniser as a static site that reads ink in the browser.

The site holds the page (``web/index.html``), the JavaScript runtime (``hmer_runtime/static/hmer.js``,
which hmer-serve's drawing pad also loads for its ``Pad``), the
model's graphs and ``model.json``, ONNX Runtime Web's WebAssembly build and KaTeX, both taken
from npm at build time (pinned below, cached in ``~/.cache/hmer/npm``), and a service worker that
caches it all, so a second visit loads from the cache and works offline. Any static file server
shows it: ``python -m http.server -d OUT_DIR``. Needs no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import click

import hmer_runtime
from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.engine.model_spec import LICENSE_FILE, MODEL_FILE, ModelSpec
from hmer_runtime.errors import HmerError, ModelError
from hmer_runtime.recognizer import BUNDLED_MODEL
from hmer_runtime.text.grammar import grammar_tables

WEB = Path(__file__).parent / "web"
STATIC = Path(hmer_runtime.__file__).parent / "static"
ORT_WEB = ("onnxruntime-web", "1.30.0")
KATEX = ("katex", "0.16.9")
#: What the site takes from each npm package: (member under package/, where it goes in the site).
ORT_FILES = [("dist/ort.wasm.min.js", "ort/ort.wasm.min.js"),
             ("dist/ort-wasm-simd-threaded.wasm", "ort/ort-wasm-simd-threaded.wasm"),
             ("dist/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.mjs")]
KATEX_FILES = [("dist/katex.min.js", "katex/katex.min.js"), ("dist/katex.min.css", "katex/katex.min.css")]
#: A variant's decoder is used in the browser when its ExpRate is within this of fp32's on every split.
INT8_TOLERANCE = 1.0


class WebBuildError(HmerError):
    """Something the web build needs is missing (npm, a package, a model file)."""


def npm_package(name: str, version: str, cache: Path) -> Path:
    """The tarball of ``name@version`` from npm, fetched once into ``cache``."""
    tarball = cache / f"{name}-{version}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise WebBuildError("npm", f"not found; the web build takes {name}@{version} from the npm registry: "
                                   "install Node.js and npm, or put the package's tarball at " + str(tarball))
    cache.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", str(cache), "--silent"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not tarball.is_file():
        raise WebBuildError(f"{name}@{version}", f"npm pack failed: {(p.stderr or p.stdout).strip()[-500:]}")
    return tarball


def _extract(tarball: Path, wanted: list[tuple[str, str]], out: Path, prefix: str | None = None) -> None:
    """Copy ``wanted`` members (and, with ``prefix``, every member under it) of an npm tarball into ``out``."""
    with tarfile.open(tarball) as tar:
        members = {m.name.removeprefix("package/"): m for m in tar.getmembers() if m.isfile()}
        pairs = list(wanted)
        if prefix:
            pairs += [(name, f"katex/fonts/{Path(name).name}") for name in members
                      if name.startswith(prefix) and name.endswith(".woff2")]
        for member, dest in pairs:
            if member not in members:
                raise WebBuildError(str(tarball), f"has no {member}")
            target = out / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(members[member]).read())


def choose_variant(spec: ModelSpec, requested: str = "auto") -> str:
    """The decoder variant the browser runs: int8 where the model card puts it within
    INT8_TOLERANCE points of fp32 on every split it was measured on (smaller download), else fp32."""
    if requested != "auto":
        if requested not in spec.variants:
            raise ModelError(str(spec.directory), f"no {requested} variant (has: {', '.join(sorted(spec.variants))})")
        return requested
    evaluation = spec.raw.get("evaluation", {})
    pairs = [(v, evaluation.get(" ".join(["int8" if w == "fp32" else w for w in k.split()])))
             for k, v in evaluation.items() if k.split()[-3:] == ["fp32", "beam", "1"]]
    if "int8" in spec.variants and pairs and all(
            int8 and abs(int8["exprate"] - fp32["exprate"]) <= INT8_TOLERANCE for fp32, int8 in pairs):
        return "int8"
    return "fp32"


def browser_decode(spec: ModelSpec) -> tuple[dict, str | None]:
    """The ``decode`` section the site's model.json gets: the model's own, except that hmer.js has
    only hmer's search, so a model that decodes with CoMER's gets hmer's (rescored right to left
    where the model reads both ways). Returns it, and a note for the user when it changed."""
    opts = spec.decode
    if opts.search == "hmer":
        return opts.to_model_json(), None
    return opts.with_overrides(search="hmer").to_model_json(), (
        "note: the model decodes with CoMER's search, which the browser runtime does not have; the site "
        "decodes with hmer's (left to right" + (", rescored right to left)" if opts.rescore else ")") +
        ", so its readings can differ from hmer-run's")


#: The file every built site holds: only a folder with it is replaced by a new build.
SITE_MARKER = ".hmer-web-site"


class SiteError(HmerError):
    """An output folder that a site must not be written into."""


def check_site_folder(out: Path, model_dir: Path, force: bool = False) -> None:
    """SiteError unless ``out`` may be replaced by a site: it is not the model folder, holds
    neither it nor the current directory, and is new, empty or an earlier build (``force``:
    any other folder too)."""
    target, model, here = out.resolve(), model_dir.resolve(), Path.cwd().resolve()
    if target == model or target in model.parents:
        raise SiteError(str(out), "holds the model the site is built from; choose another output folder")
    if target == here or target in here.parents:
        raise SiteError(str(out), "holds the current directory; choose another output folder")
    if target.exists() and not target.is_dir():
        raise SiteError(str(out), "is a file, not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / SITE_MARKER).is_file() and not force:
        raise SiteError(str(out), "is a folder that is not an earlier hmer-web build, and a build replaces "
                                  "the whole folder; choose a new folder, or --force to replace it")


def build_site(model_dir: str | os.PathLike | None, out_dir: str | os.PathLike, variant: str = "auto",
               cache: Path | None = None, log=click.echo, force: bool = False) -> Path:
    """Write the static site for ``model_dir`` (default: the bundled model) into ``out_dir``,
    replacing it whole: the site is assembled beside it and moved into place. An existing
    ``out_dir`` is replaced only when it is empty or an earlier build (or with ``force``)."""
    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    out = Path(out_dir)
    check_site_folder(out, spec.directory, force)
    chosen = choose_variant(spec, variant)
    files = spec.variants[chosen]
    cache = cache or Path(os.environ.get("HMER_CACHE", Path.home() / ".cache" / "hmer")) / "npm"
    out.parent.mkdir(parents=True, exist_ok=True)
    # a folder of our own beside OUT, never one of the user's
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        (tmp / SITE_MARKER).write_text("built by hmer-web; a new build replaces this folder\n", encoding="utf-8")
        for role in ("encoder", "decoder", "scorer", "weights"):
            if files.get(role):
                shutil.copy2(spec.directory / files[role], tmp / files[role])
        if (spec.directory / LICENSE_FILE).is_file():  # the weights' terms travel with them
            shutil.copy2(spec.directory / LICENSE_FILE, tmp / LICENSE_FILE)
        decode, note = browser_decode(spec)
        raw = {**spec.raw, "variants": {chosen: files}, "decode": decode,
               "grammar": spec.raw.get("grammar") or grammar_tables(),
               "web": {"variant": chosen, "onnxruntime_web": ORT_WEB[1], "katex": KATEX[1]}}
        (tmp / MODEL_FILE).write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        shutil.copy2(WEB / "index.html", tmp / "index.html")
        for name in ("hmer.js", "pad.css"):  # the runtime and the pad's look, shared with hmer-serve's page
            shutil.copy2(STATIC / name, tmp / name)
        _extract(npm_package(*ORT_WEB, cache), ORT_FILES, tmp)
        _extract(npm_package(*KATEX, cache), KATEX_FILES, tmp, prefix="dist/fonts/")
        site = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for name in site:
            digest.update(name.encode() + (tmp / name).read_bytes())
        worker = (WEB / "sw.js").read_text(encoding="utf-8")
        worker = worker.replace("__CACHE__", f"hmer-{digest.hexdigest()[:16]}")
        worker = worker.replace("__FILES__", json.dumps(["./"] + site))
        (tmp / "sw.js").write_text(worker, encoding="utf-8")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "site")
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if note:
        log(note)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"wrote {out}/ ({size / 1e6:.1f} MB, {chosen} decoder, onnxruntime-web {ORT_WEB[1]}); "
        f"serve it with: python -m http.server -d {out}")
    return out


def serve_site(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
    """A static file server for a built site, serving in a background thread; ``.url`` is its address."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                          ".wasm": "application/wasm"}

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(root)))
    server.url = f"http://{host}:{server.server_address[1]}/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """The recogniser in the browser."""


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("dirs", nargs=-1, metavar="[MODEL_DIR] OUT_DIR")
@click.option("--variant", type=click.Choice(["auto", "fp32", "int8", "fp16"]), default="auto", show_default=True,
              help="Decoder graphs to ship (auto: int8 where the model card puts it within 1 point of fp32).")
@click.option("--force", is_flag=True,
              help="Replace OUT_DIR even when it is not an earlier build (never the model's folder or one "
                   "that holds the current directory).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def build(dirs, variant, force, debug) -> None:
    """Write a static site that recognises ink in the browser (MODEL_DIR default: the bundled
    model). OUT_DIR is replaced whole, so it must be new, empty or an earlier build."""
    if len(dirs) not in (1, 2):
        raise click.UsageError("give OUT_DIR, or MODEL_DIR and OUT_DIR")
    build_site(dirs[0] if len(dirs) == 2 else None, dirs[-1], variant, force=force)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("site", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def serve(site, host, port) -> None:
    """Serve a built site (any static file server does; this one knows .mjs and .wasm)."""
    import time

    server = serve_site(site, host, port)
    click.echo(f"serving {site} at {server.url} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
