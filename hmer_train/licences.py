"""The terms trained weights inherit from their training data, recorded by ``hmer-export``.

Weights trained on a dataset are a derivative of it, so its licence travels with the model:
``model.json`` (``license``), each graph's ONNX metadata and a LICENSE file in the model folder.
A run names its terms with the config's ``license:`` section; left out, they follow ``dataset``.
"""

from __future__ import annotations

from hmer_train.config import Config

CROHME_TERMS = {
    "spdx": "CC-BY-NC-SA-3.0",
    "name": "Creative Commons Attribution-NonCommercial-ShareAlike 3.0 Unported",
    "url": "https://creativecommons.org/licenses/by-nc-sa/3.0/",
    "notice": (
        "These weights were trained on CROHME, the Competition on Recognition of Online Handwritten "
        "Mathematical Expressions (ICDAR and ICFHR, distributed by IAPR TC-11 under CC BY-NC-SA 3.0). "
        "They are a derivative of it: non-commercial use only, share alike, with attribution to CROHME."
    ),
}

#: Known datasets' terms, by the name ``Config.dataset`` uses.
DATASET_TERMS: dict[str, dict[str, str]] = {"CROHME": CROHME_TERMS}

UNKNOWN_TERMS = {
    "spdx": "NOASSERTION",
    "name": "the terms of the training data",
    "url": "",
    "notice": "These weights carry the terms of the data they were trained on, which this run did not name "
              "(set `license:` in its config).",
}


def weights_license(cfg: Config) -> dict[str, str]:
    """The licence of weights trained with ``cfg``: its ``license`` section, else its dataset's."""
    if cfg.license:
        return {**UNKNOWN_TERMS, **{k: str(v) for k, v in cfg.license.items()}}
    return dict(DATASET_TERMS.get(str(cfg.dataset).upper(), UNKNOWN_TERMS))


def license_file_text(terms: dict[str, str]) -> str:
    """The LICENSE file written beside the graphs."""
    lines = [f"Model weights licence: {terms['name']} ({terms['spdx']})"]
    if terms.get("url"):
        lines.append(terms["url"])
    lines += ["", terms["notice"], "",
              "The hmer code that runs these weights is Apache-2.0; that licence does not cover the weights."]
    return "\n".join(lines) + "\n"
