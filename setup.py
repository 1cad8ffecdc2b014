"""super-sub: hierarchical Super-Sub image classification with TensorFlow/Keras.

The repository's top-level folders `datasets/`, `train/` and `export/` are installed
under the project's namespace (`super_sub.datasets`, `super_sub.train`,
`super_sub.export`) so that `pip install .` never shadows the widely installed
`datasets` package (Hugging Face) or claims the names `train`/`export`.
"""

import pathlib

import setuptools

ROOT = pathlib.Path(__file__).parent


# TFDS dataset folders live in datasets/<name>/ (TFDS's layout) and are reached as
# super_sub.datasets.<name> through symlinks in super_sub/datasets/: TFDS locates a
# builder's README, checksums.tsv and dummy data from its module path, so the files must
# really sit under super_sub/ (a setuptools package_dir mapping breaks that in editable
# installs). super_sub/datasets/__init__.py registers them all.
DATASETS = sorted(p.parent.name for p in (ROOT / "datasets").glob("*/__init__.py"))


TRAIN = [
    "tensorflow>=2.16,<2.22",
    "tf-keras>=2.16,<2.22",
    "tensorflow-model-optimization>=0.8.0",
    "tensorflow-datasets>=4.9.4,<4.10",
    "tensorboard>=2.16",  # the TensorBoard callback of training runs
    "matplotlib>=3.5",  # the misclassification report's pictures (super_sub.analysis)
    "markdown>=3.4",  # the findings page's Markdown as HTML (super_sub.analysis.findings)
]


setuptools.setup(
    name="super-sub",
    version="0.1.0",
    description="Super-Sub hierarchical image classification: generalist + cheap specialists "
                "(TFDS, tf_keras, tfmot, TFLite)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=(setuptools.find_packages(include=["super_sub", "super_sub.*"])
              + ["super_sub.train", "super_sub.export"]),
    package_dir={"super_sub.train": "train",
                 "super_sub.export": "export"},
    package_data={
        "super_sub": ["hierarchies/*.json"],
        **{f"super_sub.datasets.{name}": ["README.md", "CITATIONS.bib", "TAGS.txt",
                                          "checksums.tsv", "*.txt"] for name in DATASETS},
    },
    # The base install is the edge runtime (super_sub.runtime, super-sub-predict): what a
    # phone-class or server device needs to run a TFLite bundle, and no TensorFlow.
    install_requires=[
        "numpy>=1.24",
        "pillow>=9.0",  # image files -> model inputs (super_sub.data.images)
        "ai-edge-litert>=2.2",  # the LiteRT interpreter (2.2: CompiledModel with packed weights)
        "flatbuffers>=24.3",  # parsing TFLite flatbuffers to rebuild specialists
        "absl-py>=1.0",  # the command-line entry points
    ],
    extras_require={
        # Training, evaluation, export and analysis: `pip install 'super-sub[train]'`.
        "train": TRAIN,
        # `tfds build` (the TFDS command line) imports apache_beam and mlcroissant in TFDS 4.9.10
        # (tensorflow/datasets#5463); building from Python does not need it.
        "cli": TRAIN + ["apache-beam>=2.50", "mlcroissant>=1.0"],
        # tfds.testing needs dill and importlib_resources (TFDS's own test extras); hypothesis
        # drives the fuzz tests of every parser of untrusted input (tests/test_fuzz.py).
        "dev": TRAIN + ["pytest>=7", "hypothesis>=6", "dill>=0.3", "importlib_resources>=5",
                        "apache-beam>=2.50", "mlcroissant>=1.0", "psutil>=5.9",
                        "packaging>=21"],
    },
    entry_points={"console_scripts": [
        "super-sub-hierarchy=super_sub.train.derive_hierarchy:run",
        "super-sub-build=super_sub.train.build_dataset:run",
        "super-sub-train=super_sub.train.train:run",
        "super-sub-eval=super_sub.train.evaluate:run",
        "super-sub-demo=super_sub.train.demo:run",
        "super-sub-export=super_sub.export.export:run",
        "super-sub-analyze=super_sub.train.analyze:run",
        "super-sub-findings=super_sub.train.findings:run",
        "super-sub-predict=super_sub.export.predict:run",
    ]},
)
