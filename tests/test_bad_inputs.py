"""Bad input never takes a batch, a server or a run down with it: every failure is one
error line naming the input, the rest of the batch still runs, and special files are refused."""

import csv
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import expression_strokes, inkml_text, write_inkml_set
from tiny import random_checkpoint, tiny_config

from hmer_runtime.errors import InkError, InputError, ModelError, input_error
from hmer_runtime.files import read_bounded, walk_files
from hmer_runtime.inputs.inkml import Ink, parse_inkml, read_inkml, validate_ink
from hmer_runtime.inputs.preprocess import load_image, to_gray
from hmer_runtime.inputs.render import RenderConfig, render_ink
from hmer_runtime.inputs.sources import iter_source, load_labelled
from hmer_runtime.recognizer import Recognizer

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def good_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.png"
    ink = Ink.from_strokes([s.tolist() for s in expression_strokes(list("x+1"))])
    Image.fromarray(render_ink(ink, RenderConfig(symbol_px=20, line_width=2))).save(path)
    return path


def _run(*args, timeout: float = 120, **kw):
    return subprocess.run([str(BIN / "hmer-run"), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          **kw)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_huge_text_chunk(path: Path, good: Path) -> None:
    """A valid PNG plus a zTXt chunk that inflates to 64 MB (PIL refuses it with a ValueError)."""
    data = good.read_bytes()
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * (64 << 20), 9))
    path.write_bytes(data[:33] + ztxt + data[33:])  # after the 8-byte signature and 25-byte IHDR


def _nested_trace_groups(depth: int) -> str:
    strokes = expression_strokes(list("x"))
    base = inkml_text(strokes, "x")
    return base.replace("</ink>", "<traceGroup>" * depth + "</traceGroup>" * depth + "</ink>")


def test_any_failure_becomes_one_error_naming_the_input():
    assert str(input_error("a.png", ValueError("Decompressed Data Too Large"))) == \
        "a.png: ValueError: Decompressed Data Too Large"
    assert "nested too deeply" in str(input_error("a.inkml", RecursionError()))
    assert "permission denied" in str(input_error("a.inkml", PermissionError(13, "Permission denied")))
    # An error about the InkML's own id is re-named after the file.
    renamed = input_error("dir/a.inkml", InkError("UI_2011_17", "a single point"))
    assert isinstance(renamed, InkError) and str(renamed) == "dir/a.inkml: a single point"


def test_special_and_oversized_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.inkml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(fifo, 1000)  # returns at once: no writer is waited for
    zero = tmp_path / "zero.inkml"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InkError, match="not a regular file"):  # the InkML reader's own error class
        read_inkml(zero)
    big = tmp_path / "big.inkml"
    big.write_bytes(b" " * 2001)
    with pytest.raises(InputError, match="over the 2000-byte limit"):
        read_bounded(big, 2000)
    with pytest.raises(InputError, match="no such file"):
        read_bounded(tmp_path / "missing.png", 10)


def test_unreadable_files_and_folders_are_reported(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.inkml").write_text("x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.inkml").write_text("x")
    real_scandir = os.scandir

    def scandir(path="."):  # as root every folder is readable: simulate one that is not
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, errors = walk_files(tmp_path, (".inkml",))
    assert [f.name for f in files] == ["a.inkml"]
    assert len(errors) == 1 and "locked" in str(errors[0]) and "permission denied" in str(errors[0])
    real_open = os.open

    def deny(path, *a, **k):
        if str(path).endswith("a.inkml"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(InkError, match="a.inkml: permission denied"):
        read_inkml(tmp_path / "ok" / "a.inkml")


def test_deeply_nested_inkml_and_huge_coordinates_are_named_errors(tmp_path):
    with pytest.raises(InkError, match="nested too deeply"):
        parse_inkml(_nested_trace_groups(1000).encode(), "deep.inkml")
    far = Ink([np.array([[1e308, 0.0], [-1e308, 1.0]])], id="far")
    with pytest.raises(InkError, match="coordinates span inf"):
        validate_ink(far)
    # In a dataset, the nested file is one error naming its path; the others still load.
    d = tmp_path / "set"
    write_inkml_set(d, [list("1+2"), list("x")])
    (d / "deep.inkml").write_text(_nested_trace_groups(1000))
    results = []
    for sample in iter_source(d):
        try:
            load_labelled(sample)
            results.append("ok")
        except InkError as e:
            results.append(str(e))
    assert results.count("ok") == 2 and any(r.startswith("deep.inkml: ") for r in results)


def test_high_bit_depth_and_lab_images_keep_their_ink(good_png, tmp_path):
    gray8 = np.asarray(Image.open(good_png).convert("L"))
    img16 = Image.fromarray(gray8.astype(np.uint16) * 257)
    buf = io.BytesIO()
    img16.save(buf, format="PNG")
    loaded = load_image(buf.getvalue())
    assert loaded.mode.startswith("I")
    assert np.abs(to_gray(loaded) - gray8 / 255.0).max() < 1e-6
    lab = Image.merge("LAB", [Image.fromarray(gray8), Image.new("L", img16.size, 128), Image.new("L", img16.size, 128)])
    assert np.abs(to_gray(lab) - gray8 / 255.0).max() < 1e-6


def test_a_batch_with_hostile_files_still_recognises_the_good_ones(tiny_model_dir, good_png, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    _png_with_huge_text_chunk(bad / "ztxt.png", good_png)
    Image.merge("LAB", [Image.open(good_png).convert("L")] + [Image.new("L", Image.open(good_png).size, 128)] * 2
                ).save(bad / "lab.tif")
    (bad / "deep.inkml").write_text(_nested_trace_groups(1000))
    os.mkfifo(bad / "pipe.png")
    (bad / "zero.inkml").symlink_to("/dev/zero")
    (bad / "far.inkml").write_text(inkml_text([np.array([[1e308, 0.0], [-1e308, 1.0]])], "x"))
    arr16 = (np.asarray(Image.open(good_png).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(arr16).save(bad / "sixteen.png")
    names = ["ztxt.png", "deep.inkml", "pipe.png", "zero.inkml", "far.inkml"]
    args = [good_png, *(bad / n for n in names), bad / "lab.tif", bad / "sixteen.png", good_png]
    p = _run("--model", tiny_model_dir, "--batch-size", 3, *args)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(names), p.stderr
    for name, line in zip(names, errors):
        assert line.startswith(f"error: {bad / name}: "), line
    out = [line.split("\t", 1) for line in p.stdout.split("\n")[:-1]]
    assert len(out) == len(args)  # one stdout line per input, FILE<TAB>LATEX: failures leave the LaTeX empty
    assert [c[0] for c in out] == [str(a) for a in args]
    assert [bool(c[1]) for c in out] == [True, False, False, False, False, False, True, True, True]
    assert out[-2][1] == out[-1][1]  # the 16-bit copy reads like the 8-bit original
    assert "pipe.png" in p.stderr and "not a regular file" in p.stderr


def test_json_rows_for_failures_and_non_utf8_names(tiny_model_dir, good_png, tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    odd.write_bytes(good_png.read_bytes())
    p = subprocess.run([str(BIN / "hmer-run"), "--model", str(tiny_model_dir), "--json", os.fsencode(odd),
                        str(tmp_path / "missing.png")], capture_output=True, timeout=120)
    assert p.returncode == 1
    rows = [json.loads(line) for line in p.stdout.decode("utf-8").splitlines()]  # valid UTF-8
    assert rows[0]["file"].endswith("caf\\xe9.png") and "latex" in rows[0]
    assert rows[1]["file"].endswith("missing.png") and rows[1]["error"] == "no such file"


def test_cli_ranges_are_validated(tiny_model_dir, good_png):
    for flag, value in (("--batch-size", 0), ("--batch-size", -2), ("--beam", -5), ("--beam", 0)):
        p = _run("--model", tiny_model_dir, flag, value, good_png)
        assert p.returncode == 2 and flag in p.stderr and not p.stdout, (flag, value, p.stderr)


def test_bench_ranges_are_validated(tiny_model_dir):
    for flag, value in (("--batch", "8,0"), ("--beam", "-5"), ("--runs", "0")):
        p = subprocess.run([str(BIN / "hmer-bench"), "--model", str(tiny_model_dir), flag, value, "--lengths", ""],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "|" not in p.stdout, (flag, p.stdout, p.stderr)


def test_vocabulary_edited_in_model_json_is_refused(tiny_model_dir, tmp_path):
    import shutil

    for name, edit in (("permuted", lambda v: v[:4] + v[4:][::-1]), ("resized", lambda v: v + ["\\extra"])):
        d = tmp_path / name
        shutil.copytree(tiny_model_dir, d)
        spec = json.loads((d / "model.json").read_text())
        spec["vocab"] = edit(spec["vocab"])
        (d / "model.json").write_text(json.dumps(spec))
        with pytest.raises(ModelError, match="vocabulary in model.json does not match") as e:
            Recognizer(d, provider="cpu")
        assert str(e.value).startswith(str(d))


def test_eval_on_a_dataset_without_usable_samples_is_an_error(tmp_path):
    d = tmp_path / "unusable"
    d.mkdir()
    (d / "a.inkml").write_text("<ink><trace>1 2, 3 4</trace></ink>")  # no truth annotation
    ckpt = random_checkpoint(tmp_path, "comer")
    p = subprocess.run([str(BIN / "hmer-eval"), str(ckpt), str(d)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "no usable sample" in p.stderr and "ExpRate" not in p.stdout, p.stderr


def test_resume_after_a_kill_logs_each_step_once_and_clears_partial_writes(tmp_path):
    from hmer_train.checkpoint import load_checkpoint
    from hmer_train.train import train

    cfg = tiny_config(tmp_path, "comer", max_steps=6, batch_size=3)
    train(cfg, progress=False, until_step=3)
    out = Path(cfg.out)
    assert load_checkpoint(out / "last.pt")["step"] == 3
    # What a kill -9 leaves: rows logged after the last checkpoint, and a cut-off checkpoint write.
    with open(out / "log.csv", "a") as f:
        f.write("4,1,0.5,0.001,1.0,0\n")
    (out / ".last.pt.abc123.tmp").write_bytes(b"")
    train(cfg, resume=str(out / "last.pt"), progress=False)
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not list(out.glob(".*.tmp"))


# --- hmer-serve on loopback ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tiny_model_dir):
    pytest.importorskip("fastapi")
    from hmer_bench.serve_load import launch

    proc, url = launch(["--model", str(tiny_model_dir), "--provider", "cpu", "--read-timeout", "1"])
    yield url, proc.pid
    proc.terminate()
    proc.wait(timeout=10)


def _post(url: str, body_chunks, headers: dict) -> tuple[int, dict]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1/recognize", body=body_chunks, headers=headers, encode_chunked=True)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    except (BrokenPipeError, ConnectionResetError):  # the server answered and closed mid-upload
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_server_refuses_an_endless_chunked_body_while_it_streams(server):
    url, pid = server
    before = _peak_rss_mb(pid)
    # 96 MB in 1 MB chunks, no Content-Length: buffered whole, it would raise the peak by 96 MB or more.
    status, body = _post(url, (b"\0" * (1 << 20) for _ in range(96)), {"Content-Type": "image/png"})
    assert status == 413 and "over the limit" in body["error"]
    assert _peak_rss_mb(pid) - before < 48
    with urllib_open(f"{url}/healthz") as r:
        assert r.status == 200


def test_server_closes_slow_clients(server):
    url, _ = server
    host, port = url.split("//")[1].split(":")
    socks = []
    for _ in range(20):  # slowloris: headers begun, never finished
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    time.sleep(2.5)
    closed = 0
    for s in socks:
        s.settimeout(1)
        try:
            closed += s.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:  # still open
            pass
        s.close()
    assert closed == len(socks)
    # A body that stalls after its headers gets a 408.
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nab")
    reply = b""
    while b'"error"' not in reply:  # the body may come in a packet of its own
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert " 408 " in reply.decode().splitlines()[0] and b'"error"' in reply
    with urllib_open(f"{url}/healthz") as r:
        assert r.status == 200


def test_server_errors_have_one_json_shape(tiny_model_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hmer_runtime.serving.serve import ServeOptions, create_app

    with TestClient(create_app(ServeOptions(str(tiny_model_dir), provider="cpu"))) as client:
        nested = client.post("/v1/recognize", content=b"[" * 1000 + b"]" * 1000,
                             headers={"Content-Type": "application/json"})
        assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
        broken = client.post("/v1/recognize", content=b"--xyz\r\nContent-Disposition: form-data\r\n",
                             headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert 400 <= broken.status_code < 500 and set(broken.json()) == {"error"}, broken.text
        missing = client.get("/no/such/route")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        assert client.get("/healthz").status_code == 200


def urllib_open(url: str):
    import urllib.request

    return urllib.request.urlopen(url, timeout=10)


def test_bad_caption_lines_are_named_and_the_rest_of_the_set_loads(tmp_path, good_png):
    from hmer_train.prepared import prepare

    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    for name in ("a", "b", "deep"):
        (data / "images" / f"{name}.png").write_bytes(good_png.read_bytes())
    (tmp_path / "outside.png").write_bytes(good_png.read_bytes())
    lines = [b"a\tx + 1", b"deep\t" + b"{" * 3000 + b"x" + b"}" * 3000, b"caf\xe9\tx", b"lonely",
             b"../outside.png\tx", str(tmp_path / "outside.png").encode() + b"\tx", b"b\tx + 1"]
    (data / "caption.txt").write_bytes(b"\n".join(lines) + b"\n")
    prepared = prepare(data, RenderConfig(symbol_px=20, line_width=2), cache_root=tmp_path / "cache",
                       progress=False, workers=0)
    assert sorted(prepared.names) == ["a", "b"]  # the good lines load, before and after the bad ones
    errors = prepared.errors
    assert len(errors) == 5, errors
    for lineno, why in ((2, "nested too deeply"), (3, "not UTF-8"), (4, "expected 'name<TAB>latex'"),
                        (5, "outside the image folder"), (6, "outside the image folder")):
        assert sum(f"caption.txt:{lineno}" in e and why in e for e in errors) == 1, (lineno, errors)


@pytest.mark.parametrize("where", ["../secret.bin", "ABSOLUTE", "inside.bin"])
def test_graph_reading_data_outside_its_folder_is_refused(tmp_path, where):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from hmer_runtime.engine.providers import ProviderConfig, create_session

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    w.data_location = TensorProto.EXTERNAL
    (model_dir / "inside.bin").write_bytes(secret.read_bytes())
    location = str(secret) if where == "ABSOLUTE" else where
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[w])
    path = model_dir / "encoder.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    if where == "inside.bin":  # the control: data beside the graph loads
        session, _ = create_session(path, ProviderConfig("cpu"))
        np.testing.assert_array_equal(session.run(None, {})[0], np.arange(4, dtype=np.float32))
        return
    with pytest.raises(ModelError, match="cannot load ONNX graph.*(escapes|bsolute)"):
        create_session(path, ProviderConfig("cpu"))
    assert onnx  # the graph is built with onnx's helpers; the runtime itself never imports onnx
