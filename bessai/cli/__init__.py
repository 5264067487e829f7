"""Command-line entry points: ``bessai`` (operator tools, `bessai.cli.main`), ``bessai-run`` and
``bessai-sim``. Each ``bessai`` command group lives in its own module and registers itself on the
parser built in `bessai.cli.main`."""
