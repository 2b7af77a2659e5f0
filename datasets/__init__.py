"""Dataset families; each module registers itself with @register_dataset.
Modules are auto-imported by bench.data.DATASETS."""
