"""The local development cluster, `mixup-sweep cluster ...` (commands.py): Ray nodes, the MLflow server
and, as asked, PostgreSQL and an S3 endpoint, all on 127.0.0.1."""

from .commands import main

__all__ = ["main"]
