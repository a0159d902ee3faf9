"""CoMER's own checkpoints through hmer: the comer-exact architecture, the checkpoint
mapping, and parity with CoMER's outputs in ../shared/comer-reference (skipped when absent)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmer_runtime.errors import ModelError
from hmer_runtime.text.vocab import Vocab
from hmer_train.comer_import import PREFIX, UNK_LOGIT, architecture, convert
from hmer_train.decoding import decode
from hmer_train.models.base import HMERModel

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "comer-reference"
TINY_HP = {"d_model": 32, "growth_rate": 4, "num_layers": 2, "nhead": 4, "num_decoder_layers": 2,
           "dim_feedforward": 64, "dropout": 0.3, "dc": 8, "cross_coverage": True, "self_coverage": True,
           "beam_size": 10, "max_len": 200, "alpha": 1.0}
SYMBOLS = ["x", "y", "+", "1", "2", "^", "{", "}"]

# hmer's comer-exact names -> CoMER's (the inverse of comer_import's mapping, written out here)
_TO_COMER = [
    (r"encoder\.(conv1|norm1|post_norm|dense\d\.\d+|trans\d)\.", r"encoder.model.\1."),
    (r"decoder\.feature_proj\.", "encoder.feature_proj."),
    (r"decoder\.feature_norm\.", "encoder.norm."),
    (r"decoder\.embed\.", "decoder.word_embed.0."),
    (r"decoder\.embed_norm\.", "decoder.word_embed.1."),
    (r"decoder\.input_norm\.", "decoder.norm."),
    (r"decoder\.layers\.(\d+)\.self_in\.", r"decoder.model.layers.\1.self_attn.in_proj_"),
    (r"decoder\.layers\.(\d+)\.self_out\.", r"decoder.model.layers.\1.self_attn.out_proj."),
    (r"decoder\.layers\.(\d+)\.cross_in\.", r"decoder.model.layers.\1.multihead_attn.in_proj_"),
    (r"decoder\.layers\.(\d+)\.cross_out\.", r"decoder.model.layers.\1.multihead_attn.out_proj."),
    (r"decoder\.layers\.(\d+)\.", r"decoder.model.layers.\1."),
    (r"decoder\.arm\.norm\.", "decoder.model.arm.post_norm.bn."),
    (r"decoder\.arm\.", "decoder.model.arm."),
    (r"decoder\.classifier\.", "decoder.proj."),
]


def _comer_key(name: str) -> str:
    for pattern, repl in _TO_COMER:
        if re.match(pattern, name):
            return PREFIX + re.sub(pattern, repl, name, count=1)
    raise AssertionError(name)


def tiny_comer_checkpoint(tmp_path: Path, seed: int = 0) -> tuple[Path, Path, HMERModel]:
    """A CoMER-format Lightning checkpoint of a tiny random model, its dictionary.txt, and the model
    (in CoMER's vocabulary: no <unk>)."""
    torch.manual_seed(seed)
    model = HMERModel(architecture(TINY_HP), 3 + len(SYMBOLS)).eval()
    for m in model.modules():  # non-trivial running statistics, so eval-mode BatchNorm is exercised
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    state = {}
    for name, value in model.state_dict().items():
        if name == "decoder.feature_proj.weight":
            value = value[:, :, None, None]  # CoMER's is a 1x1 conv
        state[_comer_key(name)] = value.clone()
    state[PREFIX + "decoder.pos_enc.pe"] = torch.zeros(500, TINY_HP["d_model"])
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": TINY_HP, "epoch": 3, "global_step": 100}, ckpt)
    dictionary = tmp_path / "dictionary.txt"
    dictionary.write_text("\n".join(SYMBOLS) + "\n")
    return ckpt, dictionary, model


def _load(ckpt: dict) -> HMERModel:
    model = HMERModel(ckpt["config"]["model"], len(ckpt["vocab"])).eval()
    model.load_state_dict(ckpt["model"])
    return model


def test_tiny_comer_checkpoint_converts_with_the_same_probabilities(tmp_path):
    path, dictionary, original = tiny_comer_checkpoint(tmp_path)
    ckpt = convert(path, dictionary)
    assert ckpt["vocab"][4:] == SYMBOLS and ckpt["config"]["decode"]["beam"] == 10
    assert ckpt["config"]["preprocess"]["symbol_px"] == 0  # CoMER's inputs are read as given
    model = _load(ckpt)
    images = torch.rand(2, 1, 37, 53)
    mask = torch.ones(2, 37, 53, dtype=torch.bool)
    mask[1, :, 40:] = False
    comer_tokens = torch.tensor([[1, 3, 5, 4], [2, 4, 8, 0]])  # CoMER ids (no <unk>): sos x + y, eos y ^ pad
    hmer_tokens = torch.where(comer_tokens >= 3, comer_tokens + 1, comer_tokens)
    with torch.no_grad():
        want = torch.log_softmax(original(images, mask, comer_tokens), -1)
        got = torch.log_softmax(model(images, mask, hmer_tokens), -1)
    keep = [i for i in range(got.shape[-1]) if i != 3]
    assert torch.allclose(got[..., keep], want, atol=1e-5)
    assert float(got[..., 3].max()) < UNK_LOGIT / 2  # <unk> never wins


def test_comer_exact_step_matches_teacher_forcing_on_padded_batches(tmp_path):
    path, dictionary, _ = tiny_comer_checkpoint(tmp_path, seed=1)
    model = _load(convert(path, dictionary))
    images = torch.rand(2, 1, 45, 70)
    mask = torch.ones(2, 45, 70, dtype=torch.bool)
    mask[0, 30:, :] = False
    tokens = torch.tensor([[1, 4, 6, 5, 7, 9], [2, 11, 10, 4, 8, 5]])
    with torch.no_grad():
        memory = model.encode(images, mask)
        tf = model.decoder.teacher_forcing(tokens, memory)
        state, steps = model.init_state(memory), []
        for t in range(tokens.shape[1]):
            logits, attention, state = model.step(tokens[:, t], state, memory)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), tf, atol=1e-5)
    assert attention.shape == memory["mask"].shape and set(state) >= {"k0", "cp1", "cs1", "pos"}


def test_checkpoints_that_do_not_fit_are_one_clear_error(tmp_path):
    path, dictionary, _ = tiny_comer_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(SYMBOLS[:-1]))
    with pytest.raises(ModelError, match=r"'comer_model.decoder.word_embed.0.weight' has shape"):
        convert(path, short)
    wrong = dict(raw, hyper_parameters={**TINY_HP, "dc": 16})
    torch.save(wrong, tmp_path / "wrong.ckpt")
    with pytest.raises(ModelError, match=r"comer_model.decoder.model.arm.conv.weight' has shape"):
        convert(tmp_path / "wrong.ckpt", dictionary)
    partial = dict(raw, state_dict={k: v for k, v in raw["state_dict"].items() if "proj.bias" not in k})
    torch.save(partial, tmp_path / "partial.ckpt")
    with pytest.raises(ModelError, match="no weight for 'decoder.feature_proj.bias'"):
        convert(tmp_path / "partial.ckpt", dictionary)
    torch.save({"model": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelError, match="not a CoMER checkpoint"):
        convert(tmp_path / "other.ckpt", dictionary)
    specials = tmp_path / "specials.txt"
    specials.write_text("<sos>\nx\n")
    with pytest.raises(ModelError, match="special token"):
        convert(path, specials)


# --- parity with CoMER's own outputs --------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    if not (REFERENCE / "comer-overfit.ckpt").is_file():
        pytest.skip("CoMER reference not found at ../shared/comer-reference")
    ckpt = convert(REFERENCE / "comer-overfit.ckpt", REFERENCE / "dictionary.txt")
    return _load(ckpt), Vocab.from_tokens(ckpt["vocab"]), json.loads((REFERENCE / "expected.json").read_text()), \
        np.load(REFERENCE / "expected.npz")


def _image(item: dict) -> tuple[str, torch.Tensor, torch.Tensor]:
    """CoMER's input convention: greyscale, ink 1.0 on 0.0, one image alone (nothing masked)."""
    img = np.asarray(Image.open(REFERENCE / item["image"]).convert("L"), dtype=np.float32) / 255.0
    return Path(item["image"]).stem, torch.from_numpy(img)[None, None], torch.ones(1, *img.shape, dtype=torch.bool)


def test_encoder_features_and_logits_match_comer(reference):
    model, _, meta, expected = reference
    for item in meta["images"]:
        name, x, mask = _image(item)
        tgt = torch.from_numpy(expected[f"{name}.tgt"]).long()
        with torch.no_grad():
            features = model.decoder.features(*model.encoder(x, mask)).numpy()
            logits = model(x, mask, torch.where(tgt >= 3, tgt + 1, tgt), torch.tensor([0, 0])).numpy()
        assert np.abs(features - expected[f"{name}.feature"]).max() < 1e-4, name
        keep = [i for i in range(logits.shape[-1]) if i != 3]
        assert np.abs(logits[..., keep] - expected[f"{name}.logits"]).max() < 1e-4, name


def test_bidirectional_search_reproduces_comer_in_pytorch(reference):
    model, vocab, meta, _ = reference
    for item in meta["images"]:
        _, x, mask = _image(item)
        for beam in (10, 1):
            best = decode(model, x, mask, vocab.sos_id, vocab.eos_id, beam, 200, 1.0, search="comer")[0][0]
            want = item[f"beam{beam}"]
            assert " ".join(vocab.decode(best.ids)) == want["tokens"], (item["image"], beam)
            assert abs(best.score - want["score"]) < 1e-4, (item["image"], beam)


def test_exported_comer_model_reproduces_comer_through_hmer_run(reference, tmp_path):
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    _, _, meta, _ = reference
    p = subprocess.run([str(bin_dir / "hmer-export"), str(REFERENCE / "comer-overfit.ckpt"), str(tmp_path / "out"),
                        "--vocab", str(REFERENCE / "dictionary.txt")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    images = [str(REFERENCE / item["image"]) for item in meta["images"]]
    for beam in (10, 1):  # each image alone, as CoMER's outputs were made (padding a batch changes features)
        p = subprocess.run([str(bin_dir / "hmer-run"), "--model", str(tmp_path / "out"), "--beam", str(beam),
                            "--batch-size", "1", "--json", *images], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        rows = [json.loads(line) for line in p.stdout.splitlines()]
        for item, row in zip(meta["images"], rows):
            assert " ".join(row["tokens"]) == item[f"beam{beam}"]["tokens"], (item["image"], beam)
            assert abs(row["score"] - item[f"beam{beam}"]["score"]) < 1e-3, (item["image"], beam)


def test_export_and_eval_read_a_comer_checkpoint_with_its_vocabulary(tmp_path):
    import subprocess
    import sys

    from hmer_runtime.engine.model_spec import ModelSpec

    path, dictionary, _ = tiny_comer_checkpoint(tmp_path)
    bin_dir = Path(sys.executable).parent
    p = subprocess.run([str(bin_dir / "hmer-export"), str(path), str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1 and "give its vocabulary file with --vocab" in p.stderr
    p = subprocess.run([str(bin_dir / "hmer-export"), str(path), str(tmp_path / "out"), "--vocab", str(dictionary)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    spec = ModelSpec.load(tmp_path / "out")
    assert spec.vocab.tokens[4:] == SYMBOLS and spec.stride == 1 and spec.architecture["decoder"]["type"] == \
        "comer-exact"
    assert spec.decode.beam == 10 and spec.preprocess.symbol_px == 0
    from synth import write_inkml_set

    write_inkml_set(tmp_path / "data", [list("x+1"), list("y2")])
    for model in (str(path), str(tmp_path / "out")):  # the checkpoint in PyTorch, the export in ONNX Runtime
        extra = ["--vocab", str(dictionary)] if model == str(path) else []
        p = subprocess.run([str(bin_dir / "hmer-eval"), model, str(tmp_path / "data"), "--json", *extra],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["n"] == 2


def test_comer_rule_keeps_the_best_endings():
    from hmer_runtime.decoding.rules.comer import _NBest
    from hmer_runtime.decoding.search import Hypothesis, beam_search

    best = _NBest(2)
    for score in (-3.0, -1.0, -2.0, -0.5):
        best.add(Hypothesis([], score, score))
    assert sorted(h.score for h in best.items) == [-1.0, -0.5] and best.worst == -1.0
    with pytest.raises(ValueError):
        beam_search(lambda t, s: None, lambda s, i: s, None, 1, 2, 1, 2, 5, rule="CoMER")


def test_pytorch_and_onnx_comer_searches_agree_on_a_tiny_model(tmp_path):
    from hmer_export.exporter import ExportOptions, export_checkpoint
    from hmer_runtime.engine.model_spec import ModelSpec
    from hmer_runtime.engine.onnx_model import OnnxModel
    from hmer_runtime.engine.providers import ProviderConfig

    path, dictionary, _ = tiny_comer_checkpoint(tmp_path, seed=3)
    export_checkpoint(path, tmp_path / "out", ExportOptions(vocab=dictionary), log=lambda s: None)  # checks both
    model = _load(convert(path, dictionary))
    onnx = OnnxModel(ModelSpec.load(tmp_path / "out"), "fp32", ProviderConfig("cpu"))
    images = np.random.default_rng(0).random((2, 1, 40, 64)).astype(np.float32)
    mask = np.ones((2, 40, 64), dtype=bool)
    for beam in (1, 4):
        a = decode(model, torch.from_numpy(images), torch.from_numpy(mask), 1, 2, beam, 12, 1.0, search="comer")
        b = onnx.decode(images, mask, onnx.spec.decode.with_overrides(beam=beam, max_len=12))
        assert [h[0].ids for h in a] == [h[0].ids for h in b]
        assert np.allclose([h[0].score for h in a], [h[0].score for h in b], atol=1e-4)
        assert all(len(hs) == 2 * beam for hs in a)  # every ending of both readings, ranked
