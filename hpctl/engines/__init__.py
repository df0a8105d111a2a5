"""Programs other than hpctl's trainer that a job can run: each module plans one engine."""
