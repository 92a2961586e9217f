"""Experiment 17: unsupervised learning on MNIST: k-means, hierarchical clustering, PCA, SVD, ICA,
and a trained CNN's embeddings mapped the same way as the raw pixels.

    python -m experiments.exp17_unsupervised
    -> see docs/lessons.md

On the first 2,000 test images (pixels / 255, flattened to 784), with scikit-learn:
- PCA: the explained variance of each component (checked against numpy's SVD in the tests) and
  the 2-D map of the first two components, coloured by the true label;
- k-means: the inertia (within-cluster sum of squares) for k = 2 ... 20, a look at the cluster
  count (it falls smoothly, with no clear elbow at 10), and at k = 10 the purity against the
  labels (each cluster votes for its commonest digit) and the adjusted Rand index;
- hierarchical clustering: Ward linkage on the first 50 principal components of 1,000 images,
  cut at 10 clusters (purity, ARI) and its dendrogram's top;
- SVD: the rank-k reconstruction error (the Eckart-Young optimum) and reconstructions of a digit;
- ICA: FastICA's 16 independent components beside PCA's first 16, as images;
- embeddings: a small CNN (3x3 convolutions of 16 and 32 channels, dense 256; Adam on a
  one-cycle schedule, 2 epochs; trained here by `train.train_and_evaluate` unless --cnn_workdir
  names a trained run) maps each image to its penultimate layer (the dense
  layer's ReLU outputs, 256 numbers); the same PCA map and k-means purity on those embeddings
  separate the digits far better than on pixels.
Outputs: results.json, pca_map.png, kmeans.png, hierarchical.png, svd.png, ica.png,
metrics.jsonl, tensorboard/ and checkpoints/ (PCA's and k-means' fitted arrays).
"""

import dataclasses
import pathlib
import shutil

import jax
import numpy as np
from absl import flags

from experiments import _common
from jaxdigits import cli, data, models, runs, train
from jaxdigits.config import Config

SECTION = "Unsupervised: k-means, hierarchical clustering, PCA, SVD, ICA; CNN embeddings"


def purity(labels, clusters) -> float:
    """Fraction of points whose cluster's commonest label is their own."""
    total = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
    return float(total / len(labels))


def module_of(config):
    """The flax module behind a run's model (for its intermediate outputs): mlp or a CNN."""
    width = config.hidden[0] if config.hidden else None
    if config.model == "mlp":
        return models.MLP(tuple(config.hidden) or (512,))
    if config.model == "cnn_tiny":
        return models.CNN(features=(16, 32), kernels=(3, 3), hidden=width or 256)
    if config.model in ("cnn", "cnn_small"):
        features = (32, 64) if config.model == "cnn" else (16, 32)
        return models.CNN(features=features, hidden=width or 128)
    raise _common.UserError(f"--cnn_workdir must be an mlp or CNN run, not {config.model}.")


def embeddings(run_dir: pathlib.Path, images) -> np.ndarray:
    """A run's penultimate layer (ReLU of its last hidden dense layer) for uint8 images
    [n, 28, 28, 1] -> [n, width]."""
    setup, params, _ = runs.load_run(run_dir, "latest")
    module = module_of(setup.config)
    last_hidden = f"Dense_{sum(name.startswith('Dense_') for name in params) - 2}"
    x = (images.astype(np.float32) / 255 - setup.mean) / setup.std

    @jax.jit
    def penultimate(x):
        _, state = module.apply({"params": params}, x, capture_intermediates=True)
        return jax.nn.relu(state["intermediates"][last_hidden]["__call__"][0])

    return np.concatenate([np.asarray(penultimate(x[i:i + 500])) for i in range(0, len(x), 500)])


# A small CNN that reaches 99 % in two epochs (the speedrun recipe's net and schedule when this
# lesson was written), spelled out so that the lesson does not move when the recipe does.
CNN_CONFIG = dict(model="cnn_tiny", optimizer="adam", learning_rate=6e-3, schedule="one_cycle",
                  epochs=2, batch_size=128, augment_shift=0, driver="step", eval_batch_size=250)


def train_cnn(workdir: pathlib.Path) -> dict:
    """Trains CNN_CONFIG into `workdir` afresh (a previous run there is replaced)."""
    if (workdir / "config.json").exists():
        shutil.rmtree(workdir)
    config = dataclasses.replace(Config(), **CNN_CONFIG)
    return train.train_and_evaluate(config, workdir, allow_download=False, quiet=True)


def plot_map(path, maps, labels, titles):
    fig, axes = _common.subplots(1, len(maps), width=5.0, height=4.4)
    for ax, points, title in zip(axes[0], maps, titles):
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4)
        ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    fig.colorbar(scatter, ax=axes[0, -1], label="digit")
    return _common.save_figure(fig, path)


def plot_kmeans(path, ks, inertias, variance):
    fig, axes = _common.subplots(1, 2, width=5.2)
    axes[0, 0].plot(ks, inertias, "o-")
    axes[0, 0].axvline(10, color="gray", linestyle=":")
    axes[0, 0].set(xlabel="k (clusters)", ylabel="inertia", title="k-means: the cluster count")
    axes[0, 1].plot(np.arange(1, len(variance) + 1), np.cumsum(variance), "o-", markersize=3)
    axes[0, 1].set(xlabel="principal components", ylabel="cumulative explained variance",
                   title="PCA: explained variance")
    return _common.save_figure(fig, path)


def plot_images(path, rows, titles):
    fig, axes = _common.subplots(len(rows), len(rows[0]), width=1.3, height=1.5)
    for r, (row, title) in enumerate(zip(rows, titles)):
        for c, image in enumerate(row):
            axes[r, c].imshow(image.reshape(28, 28), cmap="RdBu_r" if image.min() < 0 else "gray")
            axes[r, c].set(xticks=[], yticks=[])
        axes[r, 0].set_ylabel(title, fontsize=8)
    return _common.save_figure(fig, path)


def plot_dendrogram(path, linkage):
    from scipy.cluster import hierarchy

    fig, axes = _common.subplots(1, 1, width=8.0)
    hierarchy.dendrogram(linkage, truncate_mode="lastp", p=30, ax=axes[0, 0])
    axes[0, 0].set(title="Ward linkage on 50 PCs (top 30 merges)", ylabel="merge distance")
    return _common.save_figure(fig, path)


def cluster(x, labels, k: int, seed: int) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    fitted = KMeans(k, n_init=3, random_state=seed).fit(x)
    return {"purity": purity(labels, fitted.labels_),
            "ari": float(adjusted_rand_score(labels, fitted.labels_)),
            "inertia": float(fitted.inertia_), "centres": fitted.cluster_centers_}


def run(workdir, *, examples=2000, hierarchical_examples=1000, cnn_workdir=None, seed=0,
        ks=(2, 4, 6, 8, 10, 12, 15, 20), ica_iterations=500) -> dict:
    from scipy.cluster import hierarchy
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA, FastICA
    from sklearn.metrics import adjusted_rand_score

    _common.check_positive(examples=examples, hierarchical_examples=hierarchical_examples)
    workdir = _common.prepare_workdir(workdir)
    ds = data.load_dataset("mnist", allow_download=False)
    images, labels = ds.test_images[:examples], ds.test_labels[:examples]
    x = images.reshape(len(images), -1).astype(np.float64) / 255  # [n, 784]
    pca = PCA(50, svd_solver="full").fit(x)  # Exact, as numpy's SVD (checked in the tests).
    pcs = pca.transform(x)
    ks = sorted(set(ks) | {10})  # k = 10, the digits' count, is always fitted.
    fits = {k: cluster(x, labels, k, seed) for k in ks}
    small = pcs[:hierarchical_examples]
    ward = AgglomerativeClustering(10, linkage="ward").fit(small)
    u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    ranks = [1, 5, 10, 20, 50, 100]
    errors = {r: float(np.sum(s[r:] ** 2) / np.sum(s ** 2)) for r in ranks}
    ica = FastICA(16, random_state=seed, max_iter=ica_iterations, whiten="unit-variance").fit(x)
    cnn_dir = pathlib.Path(cnn_workdir) if cnn_workdir else workdir / "cnn"
    cnn_final = None if cnn_workdir else train_cnn(cnn_dir)
    embedded = embeddings(cnn_dir, images)
    embedded_map = PCA(2, random_state=seed).fit_transform(embedded)
    results = {
        "experiment": "exp17_unsupervised",
        "flags": {"examples": examples, "hierarchical_examples": hierarchical_examples,
                  "cnn_workdir": cnn_workdir, "seed": seed, "ks": ks,
                  "ica_iterations": ica_iterations},
        "pca": {"explained_variance_ratio": pca.explained_variance_ratio_,
                "first_two": float(pca.explained_variance_ratio_[:2].sum()),
                "first_50": float(pca.explained_variance_ratio_.sum())},
        "kmeans": {str(k): {n: v for n, v in f.items() if n != "centres"} for k, f in fits.items()},
        "hierarchical": {"purity": purity(labels[:hierarchical_examples], ward.labels_),
                         "ari": float(adjusted_rand_score(labels[:hierarchical_examples],
                                                          ward.labels_))},
        "svd": {"relative_error_by_rank": {str(r): e for r, e in errors.items()}},
        "ica": {"components": 16, "iterations": int(ica.n_iter_)},
        "embeddings": {"dimension": int(embedded.shape[1]),
                       "kmeans10": {n: v for n, v in cluster(embedded, labels, 10, seed).items()
                                    if n != "centres"},
                       "cnn_test_accuracy": cnn_final["test_accuracy"] if cnn_final else None},
    }
    plot_map(workdir / "pca_map.png", [pcs[:, :2], embedded_map], labels,
             ["raw pixels: first two PCs", "CNN penultimate layer: first two PCs"])
    plot_kmeans(workdir / "kmeans.png", ks, [fits[k]["inertia"] for k in ks],
                pca.explained_variance_ratio_)
    plot_dendrogram(workdir / "hierarchical.png", hierarchy.linkage(small[:300], "ward"))
    plot_images(workdir / "svd.png", [[x[0]] + [u[0, :r] * s[:r] @ vt[:r] + x.mean(0)
                                                for r in (5, 20, 50)]], ["rank 784, 5, 20, 50"])
    plot_images(workdir / "ica.png", [list(pca.components_[:8]), list(pca.components_[8:16]),
                                      list(ica.components_[:8]), list(ica.components_[8:16])],
                ["PCA 1-8", "PCA 9-16", "ICA 1-8", "ICA 9-16"])
    state = {"pca_components": pca.components_, "pca_mean": pca.mean_,
             "kmeans10_centres": fits[10]["centres"]}
    return _common.finish(workdir, results, state=state,
                          curves={"explained_variance_ratio": pca.explained_variance_ratio_})


def headline(r) -> str:
    k, e, h = r["kmeans"]["10"], r["embeddings"]["kmeans10"], r["hierarchical"]
    return (f"{r['flags']['examples']:,} test images: PCA's first 2 components explain "
            f"{100 * r['pca']['first_two']:.1f} % of the variance, 50 explain "
            f"{100 * r['pca']['first_50']:.1f} %; k-means (k = 10) purity "
            f"{100 * k['purity']:.1f} % "
            f"(ARI {k['ari']:.2f}), Ward {100 * h['purity']:.1f} % (ARI {h['ari']:.2f}); on the "
            f"CNN's penultimate layer k-means purity {100 * e['purity']:.1f} % "
            f"(ARI {e['ari']:.2f}); "
            f"rank-50 SVD keeps all but {100 * r['svd']['relative_error_by_rank']['50']:.1f} % of "
            f"the centred energy")


def main(argv):
    f = cli.start(argv)
    r = run(f.workdir, examples=f.examples, cnn_workdir=f.cnn_workdir, seed=f.seed)
    print(headline(r) + f". Wrote {f.workdir}/results.json and five PNGs.")


def define():
    _common.define_workdir_flag("exp17_unsupervised")
    flags.DEFINE_integer("examples", 2000, "Test images to cluster and map.")
    flags.DEFINE_string("cnn_workdir", None, "A trained jaxdigits run (cnn or cnn_tiny) whose "
                        "penultimate layer embeds the images (default: train CNN_CONFIG here).")
    flags.DEFINE_integer("seed", 0, "Seed of k-means, PCA and ICA.")


if __name__ == "__main__":
    cli.run(main, define)
