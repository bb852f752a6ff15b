"""The Faust app of the job: the target of ``faust -A streams.app worker -l info``.

Built by the composition root from the environment's settings; ``escalations worker`` runs
the same app (see ``streams.runtime.factory``).
"""

from __future__ import annotations

from streams.runtime.factory import create_app
from streams.security import redact_logs
from streams.settings import load

__all__ = ["app", "main"]

settings = load()
redact_logs(settings.secrets())  # no log line of the worker shows a password or a token
app = create_app(settings)


def main() -> None:
    app.main()


if __name__ == "__main__":
    main()
