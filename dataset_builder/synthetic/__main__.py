"""`python -m dataset_builder.synthetic`: the `mvaema-synth` command."""

from .cli import main

raise SystemExit(main())
