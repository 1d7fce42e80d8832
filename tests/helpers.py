"""Plain helpers that test modules in several folders share (fixtures live in ``conftest.py``).

Import them as ``from helpers import ...`` from any folder under tests/: pytest puts tests/ on ``sys.path``
(``pythonpath`` in pyproject.toml). Test modules never import each other; what two of them need lives here.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from molediff.training import config_from_dict, seed_everything
from molediff.training.toy import make_toy_task

ROOT = Path(__file__).resolve().parent.parent  # the repository: configs/, scripts/, datasets/
DATA = ROOT / "tests" / "data"  # fixture files (also written by scripts/make_test_fixtures.py)


def load_script(path: Path, name: str):
    """A script of ``scripts/`` (not a package module) imported by path, e.g. a GPU job for its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reject_bare_constant(name: str):
    """``json.loads(..., parse_constant=reject_bare_constant)``: NaN and Infinity are not JSON; strict parsers
    reject them, so an output that holds them fails the test. Raises ValueError."""
    raise ValueError(f"bare {name} in JSON: strict parsers reject it")


# ------------------------------------------------------------------------------------ the toy training run
TOY_RUN = {
    "task": "toy", "steps": 10, "batch_size": 32, "seed": 3, "log_every": 1, "checkpoint_every": 5,
    "keep_last": 5, "eval_every": 0,
    "optim": {"lr": 3e-3, "warmup_steps": 3, "grad_clip": 0.5, "ema_decay": 0.9},
    # 100 points / 32 = 3 batches per epoch, so step 5 stops in the middle of epoch 1
    "model": {"in_dim": 4, "hidden": 16, "layers": 2},
    "data": {"n": 100, "seed": 1, "input_noise": 0.1},
}


def _merge_sections(base: dict, changes: dict) -> dict:
    """``base`` with ``changes``: a dict value updates that section's keys, any other value replaces the key."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = {**(merged.get(key) or {}), **value} if isinstance(value, dict) else value
    return merged


def toy_config(out_dir, base: dict | None = None, **overrides):
    """The toy regression run (``TOY_RUN``: 10 steps, checkpoints every 5) writing to ``out_dir``, as the
    engine's typed config. ``base`` (a test module's own run, in the same form) is applied first, then
    ``overrides``; either updates a section's keys when given a dict. Raises ValueError for an unknown key."""
    run = _merge_sections(_merge_sections(TOY_RUN, base or {}), overrides)
    return config_from_dict({**run, "out_dir": str(out_dir)})


def toy_task(cfg):
    """The toy task of ``cfg`` with its model initialised from seed 0, whatever ran before."""
    seed_everything(0)
    return make_toy_task(cfg.model, cfg.data)


# -------------------------------------------------------------------------------------- point-cloud models
TINY_EGNN = {"name": "egnn", "hidden": 16, "layers": 2}


def tiny_model(model_class, **config):
    """A point-cloud model (``MoleculeDiffusion``, ``ConformerDiffusion``, ...) with T = 100 and a 2-layer EGNN
    of width 16 unless ``config`` says otherwise, initialised from seed 0, in float64."""
    torch.manual_seed(0)
    return model_class(model_class.config_class(**{"T": 100, "denoiser": TINY_EGNN, **config})).double()


def random_batch(B: int = 3, N: int = 6, seed: int = 0):
    """``(positions [B, N, 3], type_index [B, N], mask [B, N])`` of B ≤ 3 random molecules of 6, 4 and 5 atoms."""
    from molediff.testing import random_molecule_batch

    return random_molecule_batch((6, 4, 5)[:B], N, seed=seed)


# -------------------------------------------------------------------------------------------- conformers
def mmff_conformers(smiles: str, k: int = 4, seed: int = 1):
    """``smiles`` with hydrogens and k MMFF94-relaxed ETKDG conformers (an RDKit Mol; needs RDKit)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert len(AllChem.EmbedMultipleConfs(mol, k, randomSeed=seed)) == k
    AllChem.MMFFOptimizeMoleculeConfs(mol)
    return mol


def etkdg_conformers(smiles: str, count: int = 2, seed: int = 7):
    """``smiles`` with hydrogens and ``count`` ETKDGv3 conformers from ``seed``, not relaxed (an RDKit Mol)."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    assert len(rdDistGeom.EmbedMultipleConfs(mol, count, params)) == count
    return mol


def train_tiny_refiner(mols, t_max: float = 0.3, steps: int = 300, hidden: int = 32, seed: int = 0):
    """A graph-conditioned ``ConformerDiffusion`` (2-layer EGNN) trained for ``steps`` Adam steps on the
    conformers of ``mols`` (RDKit Mols; several seconds): enough to tell a molecule's force-field geometry from
    a distorted one. Returned in float64, eval mode."""
    from molediff.conformers import ConformerDiffusion, ConformerDiffusionConfig
    from molediff.conformers.graph import EDGE_FEATURES, NODE_FEATURES
    from molediff.conformers.refine import model_inputs

    torch.manual_seed(seed)
    cfg = ConformerDiffusionConfig(T=100, t_max=t_max, denoiser={"name": "egnn", "hidden": hidden, "layers": 2},
                                   node_features=NODE_FEATURES, edge_features=EDGE_FEATURES)
    model = ConformerDiffusion(cfg)
    data = []
    for mol in mols:
        types, node, edge = model_inputs(model, mol)
        data.append((np.stack([c.GetPositions() for c in mol.GetConformers()]), types, node, edge))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    batch = 16
    for step in range(steps):
        x, types, node, edge = data[step % len(data)]
        n = x.shape[1]
        pick = torch.randint(0, len(x), (batch,), generator=gen).numpy()
        mask = torch.ones(batch, n, dtype=torch.bool)
        loss = model(torch.as_tensor(x[pick], dtype=torch.float32), types.expand(batch, n), mask,
                     node.expand(batch, n, -1), edge.expand(batch, n, n, -1), generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.double().eval()


# ------------------------------------------------------------------------------------------------ images
TINY_UNET = {"image_size": 8, "channels": 8, "channel_mult": [1, 2], "attention_resolutions": [4], "groups": 4,
             "dropout": 0.0}


def randomise_zero_layers(model: torch.nn.Module, std: float = 0.02) -> None:
    """Give the zero-initialised output convolutions random weights (from torch's global generator), so ε̂
    depends on the input."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0, std)


def random_images(n: int, seed: int) -> np.ndarray:
    """n random CIFAR-sized images, uint8 [n, 3, 32, 32]."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def pickled_cifar_batch(images: np.ndarray, labels: list[int], protocol: int = 2) -> bytes:
    """A batch as the official files hold it: data [N, 3072] (R, G, B planes), labels, bytes keys."""
    return pickle.dumps({b"batch_label": b"test", b"labels": labels, b"data": images.reshape(len(images), -1),
                         b"filenames": [b"x.png"] * len(images)}, protocol=protocol)


def write_cifar_batches(root: Path, per_batch: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    """The official layout, tiny: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}.

    Returns the folder and what it holds: train / test uint8 [5·per_batch or per_batch, 3, 32, 32] and
    train_labels / test_labels.
    """
    from molediff.images.cifar import CIFAR10_CLASSES

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    expect: dict[str, list] = {"train": [], "test": [], "train_labels": [], "test_labels": []}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        split = "test" if name == "test_batch" else "train"
        imgs = random_images(per_batch, i)
        labels = [(i + j) % 10 for j in range(per_batch)]
        (folder / name).write_bytes(pickled_cifar_batch(imgs, labels))
        expect[split].append(imgs)
        expect[f"{split}_labels"] += labels
    names = [n.encode() for n in CIFAR10_CLASSES]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return folder, {k: np.concatenate(v) if k in ("train", "test") else np.array(v) for k, v in expect.items()}


def jpeg_bytes(img_chw: np.ndarray) -> bytes:
    """One uint8 [3, H, W] image as a JPEG file's bytes (quality 90)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img_chw.transpose(1, 2, 0)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_packed_cifar(path: Path, n_train: int = 5, n_test: int = 3, corrupt: int | None = None) -> Path:
    """A tiny packed-JPEG CIFAR file at ``path`` (keys train_jpeg/train_offsets/train_labels, test_*, classes);
    ``corrupt`` garbles that train image. Returns ``path``."""
    from molediff.images.cifar import CIFAR10_CLASSES

    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        blobs = [jpeg_bytes(img) for img in random_images(n, 10 + n)]
        if corrupt is not None and split == "train":
            blobs[corrupt] = blobs[corrupt][:20] + b"\x00garbage" * 4
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    np.savez(path, classes=np.array(CIFAR10_CLASSES), **arrays)
    return path


# Runs a script as __main__ with biotite and RDKit blocked (the GPU machines have neither): any import of them on
# the run path fails.
NO_BIOTITE = ("import runpy, sys; sys.modules.update({m: None for m in ('biotite', 'rdkit')}); "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def assert_every_option_explained(job) -> None:
    """A GPU job (``scripts/gpu/*.py`` loaded as a module): every option of every stage has help, and the module
    docstring says what to ``carry=`` and how many ``--minutes`` it takes."""
    parser = job.build_parser()
    stages = next(a for a in parser._actions if a.dest == "stage").choices
    for stage in stages.values():
        for action in stage._actions:
            assert action.help, f"{stage.prog} {action.option_strings} has no help"
    assert "carry=" in job.__doc__ and "--minutes" in job.__doc__
