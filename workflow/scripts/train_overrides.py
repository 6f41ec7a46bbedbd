"""Snakemake script of rule train_overrides: the config's train_overrides for one dataset as the YAML file
that every run of that dataset reads with `ngp-ohem train --config`."""

import yaml

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)

with open(smk.output[0], "w") as fh:
    fh.write("# written by the workflow from config train_overrides / train_overrides_by_dataset\n")
    yaml.safe_dump(dict(smk.params.overrides), fh, sort_keys=True)
with open(smk.log[0], "w") as log:
    print(f"{smk.output[0]}: {dict(smk.params.overrides)}", file=log)
