"""hpctl: plan, apply and follow LLM training jobs on local, Slurm and Kubernetes clusters, and as
SageMaker training jobs."""
__version__ = "0.1.0"
