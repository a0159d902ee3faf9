"""Ray: ``hmer-serve --ray`` answers like hmer-serve, and ``hmer-batch`` writes hmer-run's rows.

One local Ray instance (2 CPUs, loopback only) is shared by the module and shut down at its end.
"""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from http_cases import check_bad_requests, png
from synth import expression_strokes, write_inkml_set

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hmer_bench.serve_load import free_port, launch  # noqa: E402
from hmer_runtime.errors import InputError  # noqa: E402
from hmer_runtime.serving.ray_batch import BatchOptions, read_done, run_batch  # noqa: E402
from hmer_runtime.serving.requests import Limits  # noqa: E402
from hmer_runtime.serving.serve import ServeOptions, create_app  # noqa: E402

BIN = Path(sys.executable).parent
STROKES = [s.tolist() for s in expression_strokes(list("x+1"))]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def expression_png() -> bytes:
    from hmer_runtime.inputs.inkml import Ink
    from hmer_runtime.inputs.render import RenderConfig, render_ink

    return png(render_ink(Ink.from_strokes(STROKES), RenderConfig(symbol_px=20, line_width=2)))


def test_serve_on_ray_answers_like_hmer_serve(ray_cluster, tiny_model_dir, expression_png):
    proc, url = launch(["--ray", "--address", ray_cluster, "--model", str(tiny_model_dir), "--provider", "cpu",
                        "--replica-cpus", "0.5", "--batch-wait-ms", "20"], timeout_s=240)
    try:
        local_app = create_app(ServeOptions(str(tiny_model_dir), provider="cpu"))
        with TestClient(local_app) as local, httpx.Client(base_url=url, timeout=60) as remote:
            for kwargs in (dict(json={"strokes": STROKES, "beam": 2}),
                           dict(files={"file": ("x.png", expression_png, "image/png")}),
                           dict(content=expression_png, headers={"Content-Type": "image/png"})):
                want, got = local.post("/v1/recognize", **kwargs), remote.post("/v1/recognize", **kwargs)
                assert got.status_code == want.status_code == 200, got.text
                assert got.json()["tokens"] == want.json()["tokens"]
                assert got.json()["latex"] == want.json()["latex"]
            check_bad_requests(remote.post, Limits(), expression_png, STROKES)
            assert remote.post("/v1/recognize", json={"strokes": STROKES}).status_code == 200  # still serving
            info = remote.get("/v1/model").json()
            assert info["batching"]["engine"] == "ray-serve" and info["batching"]["decoded"] >= 4
    finally:
        proc.terminate()
        proc.wait(60)
    from ray import serve

    status = serve.status()  # hmer-serve started Serve on the cluster, so stopping it took Serve down
    assert proc.returncode == 0 and "hmer" not in status.applications and not status.proxies


def test_serve_on_ray_joins_a_running_serve_only_on_its_port(ray_cluster, tiny_model_dir):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        args = ["--ray", "--address", ray_cluster, "--model", str(tiny_model_dir), "--replica-cpus", "0.5"]
        other = subprocess.run([str(BIN / "hmer-serve"), "--port", str(free_port()), *args],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and f"pass --port {port}" in other.stderr.strip().splitlines()[-1]
        assert "Traceback" not in other.stderr
        # Stopped as soon as /healthz answers, while serve.run may still be returning: SIGTERM
        # must not reach Ray's own handler, which exits with status 15 and leaves the app deployed.
        proc, _ = launch(args, timeout_s=240, port=port)
        proc.terminate()
        proc.wait(60)
        status = serve.status()
        assert proc.returncode == 0 and "hmer" not in status.applications
        assert status.proxies  # Serve was there before hmer-serve, so it stays
    finally:
        serve.shutdown()


def test_serve_builder_rejects_unknown_arguments():
    from hmer_runtime.serving.ray_serve import ScaleOptions, build_app

    with pytest.raises(ValueError, match="replica"):
        build_app({"replica": 2})
    assert ScaleOptions(2, 6).deployment_options()["autoscaling_config"]["max_replicas"] == 6
    assert ScaleOptions(3).deployment_options()["num_replicas"] == 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, expression_png) -> list[str]:
    folder = tmp_path_factory.mktemp("ray-inputs")
    write_inkml_set(folder / "ink", [list("x+1"), list("2=y"), list("7-4x"), list("y")], jitter=0.02)
    (folder / "a.png").write_bytes(expression_png)
    (folder / "broken.png").write_bytes(expression_png[:60])
    (folder / "ink" / "empty.inkml").write_text('<ink xmlns="http://www.w3.org/2003/InkML"></ink>')
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def _rows(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["file"]: {k: v for k, v in r.items() if k != "ms"} for r in rows}


def test_batch_on_ray_data_writes_hmer_runs_rows_and_resumes(ray_cluster, tiny_model_dir, inputs, tmp_path):
    plain = subprocess.run([str(BIN / "hmer-run"), "--model", str(tiny_model_dir), "--provider", "cpu", "--json",
                            "--batch-size", "2", *inputs], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1  # two of the inputs are bad
    want = {json.loads(line)["file"]: json.loads(line) for line in plain.stdout.splitlines()}
    for row in want.values():
        row.pop("ms", None)
    out = tmp_path / "rows.jsonl"
    options = BatchOptions(str(tiny_model_dir), "cpu", batch_size=2, cpus=0.5)
    summary = run_batch(inputs, out, options, workers=2, progress=False)
    assert (summary.written, summary.skipped, summary.errors) == (len(inputs), 0, 2)
    got = _rows(out)
    assert got == want  # the same predictions, and an error row for each bad file
    assert "error" in got[next(f for f in inputs if f.endswith("broken.png"))]

    # a killed job: two whole rows and a torn third; the rerun keeps the two and writes the rest once
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text(lines[0] + lines[1] + lines[2][:15], encoding="utf-8")
    assert len(read_done(out)) == 2 and out.read_text(encoding="utf-8") == lines[0] + lines[1]
    summary = run_batch(inputs, out, options, workers=1, progress=False)
    assert (summary.written, summary.skipped) == (len(inputs) - 2, 2)
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(inputs) and _rows(out) == want
    assert run_batch(inputs, out, options, progress=False).written == 0  # nothing left to do


def test_batch_cli_reports_and_exits_like_hmer_run(ray_cluster, tiny_model_dir, inputs, tmp_path):
    out, listing = tmp_path / "cli.jsonl", tmp_path / "inputs.txt"
    listing.write_text("\n".join(inputs[1:3]) + "\n")
    p = subprocess.run([str(BIN / "hmer-batch"), "--address", ray_cluster, "--model", str(tiny_model_dir),
                        "--provider", "cpu", "--worker-cpus", "0.5", "--no-progress", "-o", str(out),
                        inputs[0], f"@{listing}", str(Path(inputs[0]).parent / "nothing-*.png")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "pattern matches no files" in p.stderr and "3 row(s) written" in p.stderr
    assert len({json.loads(line)["file"] for line in out.read_text().splitlines()}) == 3


def test_the_shipped_serve_config_builds_the_application():
    import yaml

    from hmer_runtime.serving.ray_serve import build_app

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "ray-serve.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "hmer_runtime.serving.ray_serve:build_app"
    deployment = build_app(app["args"])._bound_deployment
    assert deployment._deployment_config.autoscaling_config.max_replicas == app["args"]["max_replicas"]
    assert deployment.ray_actor_options["num_cpus"] == app["args"]["cpus"]


def test_batch_refuses_an_output_file_that_is_not_its_own(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"file": "a.png", "latex": "x"}\n{"name": "not a row"}\n{"file": "b.p', encoding="utf-8")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2", encoding="utf-8")
    for path in (png, notes, csv):
        before = path.read_bytes()
        with pytest.raises(InputError, match=f"{path.name}: is not hmer-batch output"):
            read_done(path)
        with pytest.raises(InputError, match="is not hmer-batch output"):
            run_batch([str(png)], path, BatchOptions(), progress=False)  # refused before Ray starts
        assert path.read_bytes() == before  # not a byte lost
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert read_done(empty) == {}
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"file": "a.png", "latex": "x"}\n{"file": "b.png", "error": "bad"}\n{"file": "c', encoding="utf-8")
    assert read_done(mine) == {"a.png": False, "b.png": True}
    assert mine.read_text(encoding="utf-8").endswith('"bad"}\n')  # only its own torn tail is cut


def test_a_local_instance_is_reaped_when_its_driver_is_killed(tmp_path):
    """The watcher hmer-batch starts beside a local Ray instance: after a kill -9 of the driver,
    every process naming the instance's session folder ends, and another instance's survives."""
    import os
    import signal
    import subprocess
    import time

    from hmer_runtime.serving import ray_reaper

    def sleeper(*args):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *args])

    session = str(tmp_path / "session_2026-12-07_00-00-00_000000_1")
    other = sleeper(str(tmp_path / "session_other"))
    instance = [sleeper(f"--session-dir={session}"), sleeper(f"{session}/logs")]
    driver = sleeper()
    watcher = subprocess.Popen([sys.executable, "-m", "hmer_runtime.serving.ray_reaper", str(driver.pid), session],
                               start_new_session=True)
    try:
        time.sleep(1.0)
        assert all(p.poll() is None for p in instance)  # the driver lives: nothing is touched
        os.kill(driver.pid, signal.SIGKILL)
        assert watcher.wait(30) == 0
        for p in instance:
            assert p.wait(10) is not None
        assert other.poll() is None
        assert ray_reaper.session_processes(session, os.getpid()) == []
    finally:
        for p in (other, *instance, driver):
            p.kill()
            p.wait()
