"""rxnfp's fine-tuned reaction BERT (`bert_ft`: 12 layers, 256 wide, 4 heads, 591 SMILES tokens, 6.7M
parameters; Schwaller et al., "Mapping the space of chemical reactions using attention-based neural networks",
2021), whose [CLS] vector is the rxnfp reaction fingerprint, from the `rxnfp` wheel (PyPI, MIT), and a small
reaction-class task written for this benchmark.

The wheel ships the model as `config.json` + `vocab.txt` + a pickled `pytorch_model.bin`, which the service
refuses. The benchmark (trusted code reading a file it chose) reads the pickle with `torch.load(weights_only=True)`
and writes, once, the folder a user would upload: `model.safetensors`, the config with the `model_type` and
`architectures` that transformers 2.x left out, and a `tokenizer.json` that splits reaction SMILES with rxnfp's
own regex (`rxnfp.tokenization.SMI_REGEX_PATTERN`) and looks the pieces up in the shipped `vocab.txt`, adding
[CLS] and [SEP] as rxnfp's BertTokenizer does. The folder then goes through the service's folder -> program path.

The task: reaction SMILES of eight reaction classes (amide coupling, esterification, Suzuki coupling, Boc
deprotection, ester hydrolysis, nitro reduction, reductive amination, Williamson ether synthesis) written from
templates over lists of acids, amines, alcohols, aryl groups and alkyl groups (the SMILES are written by hand, not
canonicalised). The metric is leave-one-out 1-nearest-neighbour accuracy of the fingerprints (cosine) over the
classes: the paper's claim that the fingerprints cluster reactions by class, measured on 64 reactions (8 per class).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
from pathlib import Path

import numpy as np

from bench.real_models.text_metrics import nearest_neighbour_accuracy

TASK = "feature-extraction"
METRIC = "1-NN reaction-class accuracy of the [CLS] fingerprints (64 reactions, 8 classes)"
SMI_REGEX_PATTERN = (r"(\%\([0-9]{3}\)|\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\||\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|"
                     r"\?|>>?|\*|\$|\%[0-9]{2}|[0-9])")  # rxnfp.tokenization.SMI_REGEX_PATTERN

# Substituents written so that the template can attach them: acyl groups R of R-C(=O)-, amines and alcohols
# starting at their N / O, aryl groups starting at the ring atom that bonds (ring closure 1; the second aryl of a
# Suzuki coupling uses closure 2), alkyl groups starting at the carbon that bonds.
ACYL = ["C", "CC", "CCC", "C(C)C", "c1ccccc1", "c1ccc(Cl)cc1", "c1ccc(OC)cc1", "c1ccc(F)cc1", "c1ccncc1",
        "C1CCCCC1", "CCc1ccccc1", "c1ccsc1"]
AMINES = ["NC", "NCC", "NCc1ccccc1", "N1CCCCC1", "N1CCOCC1", "N(C)C", "NC1CC1", "NCCO", "Nc1ccccc1", "N1CCCC1",
          "NCCC", "NC(C)C"]
ALCOHOLS = ["OC", "OCC", "OCCC", "OC(C)C", "OCc1ccccc1", "OCC(F)(F)F"]
ARYL = ["c1ccccc1", "c1ccc(C)cc1", "c1ccc(OC)cc1", "c1ccc(F)cc1", "c1ccc(C(F)(F)F)cc1", "c1cccc(Cl)c1",
        "c1ccc(C#N)cc1", "c1ccncc1", "c1ccc(C(C)=O)cc1", "c1cc(C)cc(C)c1", "c1ccc(OC(F)(F)F)cc1", "c1ccoc1"]
ALKYL = ["C", "CC", "CCC", "CC=C", "Cc1ccccc1", "CC(C)C", "CCOC"]


def _second_ring(aryl: str) -> str:
    return aryl.replace("1", "2")


def _with_branch(aryl: str, branch: str) -> str:
    """aryl with `branch` bonded to its first atom: c1ccccc1 -> c1(branch)ccccc1."""
    return aryl[:2] + f"({branch})" + aryl[2:]


CLASSES = {
    "amide coupling": lambda r, a: (f"O=C(O){r}.{a}", f"O=C({a}){r}"),
    "esterification": lambda r, o: (f"O=C(O){r}.{o}", f"O=C({o}){r}"),
    "Suzuki coupling": lambda x, y: (f"Br{x}.OB(O){_second_ring(y)}", _with_branch(x, _second_ring(y))),
    "Boc deprotection": lambda a: (f"CC(C)(C)OC(=O){a}", a),
    "ester hydrolysis": lambda r, o: (f"O=C({o}){r}", f"O=C(O){r}"),
    "nitro reduction": lambda x: (f"O=[N+]([O-]){x}", f"N{x}"),
    "reductive amination": lambda x, a: (f"O=C{x}.{a}", f"C({a}){x}"),
    "Williamson ether": lambda x, k: (f"O{x}.Br{k}", f"O({k}){x}"),
}
ARGUMENTS = {
    "amide coupling": (ACYL, AMINES), "esterification": (ACYL, ALCOHOLS), "Suzuki coupling": (ARYL, ARYL),
    "Boc deprotection": (AMINES,), "ester hydrolysis": (ACYL, ALCOHOLS), "nitro reduction": (ARYL,),
    "reductive amination": (ARYL, AMINES), "Williamson ether": (ARYL, ALKYL),
}
VAL_PER_CLASS = 8


def package_folder(model: str = "bert_ft") -> Path:
    """The wheel's folder of `model`: `bert_ft` (fine-tuned, the fingerprint model) or `bert_pretrained` (the
    masked-LM pretrained checkpoint, saved as BertForPreTraining: masked-LM and next-sentence heads)."""
    spec = importlib.util.find_spec("rxnfp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rxnfp is not installed: pip install --no-deps rxnfp==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "transformers" / model


def reactions(train_rows: int, seed: int = 0) -> dict[str, list]:
    """{"train": reaction SMILES, "val": reaction SMILES, "val_labels": class index per val reaction}: for every
    class, VAL_PER_CLASS of its reactions go to val and the rest (shuffled across classes) to train."""
    rng = random.Random(seed)
    train, val, labels = [], [], []
    for label, (name, template) in enumerate(CLASSES.items()):
        combos = list(itertools.product(*ARGUMENTS[name]))
        rng.shuffle(combos)
        written = [">>".join(template(*args)) for args in combos]
        val += written[:VAL_PER_CLASS]
        labels += [label] * VAL_PER_CLASS
        train += written[VAL_PER_CLASS:]
    rng.shuffle(train)
    return {"train": train[:train_rows], "val": val, "val_labels": labels}


def write_upload_folder(folder: Path, model: str = "bert_ft", architecture: str = "BertModel") -> Path:
    """The folder a user would upload (safetensors, config with model_type, tokenizer.json), written once, of the
    wheel's `model` (`package_folder`) saved as `architecture`."""
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from safetensors.torch import save_file
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    source = package_folder(model)
    folder.mkdir(parents=True, exist_ok=True)
    state = torch.load(source / "pytorch_model.bin", weights_only=True, map_location="cpu")
    # One copy of a tied tensor (the pretrained model's masked-LM decoder is its word embeddings), as
    # save_pretrained writes it: transformers ties the other name again when it loads the folder.
    stored = {}
    for name, tensor in state.items():
        stored.setdefault(tensor.untyped_storage().data_ptr(), (name, tensor.contiguous()))
    save_file(dict(stored.values()), folder / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "bert", "architectures": [architecture]},
                                                   indent=1))
    vocab = {token: index for index, token in enumerate((source / "vocab.txt").read_text().splitlines())}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(SMI_REGEX_PATTERN), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    return folder


def task_metrics(fingerprints: np.ndarray, labels: list[int]) -> dict:
    return {"task": nearest_neighbour_accuracy(fingerprints, np.asarray(labels))}
