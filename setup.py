"""gato-jax: a JAX/Flax framework for training Gato-style generalist agents on TPU pods and GPU clusters."""

import setuptools

# Versions resolved and tested together (CPU, Python 3.11). jax is the CPU build; accelerators use the
# `tpu` or `cuda` extra, which pins the matching jaxlib/plugin of the same jax release.
JAX_VERSION = "0.10.2"

INSTALL_REQUIRES = [
    f"jax=={JAX_VERSION}",
    f"jaxlib=={JAX_VERSION}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow-cpu==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "ml-collections==1.1.0",
    "sentencepiece==0.2.3",
    "clu==0.0.12",
    "tensorboard==2.21.0",  # clu.metric_writers imports it
    "tensorboardX==2.6.5",
    "absl-py>=2.1",
    "numpy>=2.0,<2.5",
    "matplotlib==3.11.2",
    "imageio==2.38.1",
    "pyyaml>=6.0",
]

EXTRAS = {
    # The simulators data_pipelines/ and evaluation drive.
    "envs": [
        "gymnasium==1.4.0",
        "minigrid==3.2.0",
        "metaworld==3.1.1",
        "mujoco==3.3.0",
        "dm-control==1.0.28",  # the last release on mujoco 3.3.0 (later ones pin mujoco 4)
        "ale-py==0.12.1",  # Atari: the wheels ship the ROMs
        "box2d==2.3.10",
        "pygame-ce==2.5.8",
    ],
    # Importers of datasets people already have (gato-data import): JAT layout, Minari.
    "import": ["datasets==5.2.0", "minari==0.5.4"],
    # gato-serve: Starlette on uvicorn (ASGI, both maintained by Encode, a small dependency tree), and
    # requests for its client (gato-eval --server).
    "serve": ["starlette==1.10.0", "uvicorn==0.55.0", "requests==2.34.2"],
    "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "requests==2.34.2"],
    # bench/peer_torch.py's PyTorch peer only (never the core install or CI). Install the CPU build
    # (2.13.0+cpu, which satisfies this pin): the default Linux wheel also pulls the CUDA libraries.
    "bench": ["torch==2.13.0", "transformers==5.18.0"],
    "tpu": [f"jax[tpu]=={JAX_VERSION}"],
    "cuda": [f"jax[cuda12]=={JAX_VERSION}"],
}

setuptools.setup(
    name="gato-jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["gato_jax*", "experiments*", "data_pipelines*", "launch*"]),
    package_data={
        "data_pipelines": ["**/*.txt", "**/*.model", "*.md"],
        "launch": ["*.sh", "*.md", "gke/*.tmpl", "gke/Dockerfile", "slurm/*"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "gato-data=data_pipelines.cli:run",
            "gato-train=gato_jax.train:run",
            "gato-model-summary=gato_jax.model_summary:run",
            "gato-eval=gato_jax.evaluate:run",
            "gato-serve=gato_jax.serving.cli:run",
        ],
    },
)
