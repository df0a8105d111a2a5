"""The trainer that runs inside the job: `python -m adapter.train --config SPEC` (see README.md)."""
