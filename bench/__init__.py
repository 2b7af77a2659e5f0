"""Engine of the debiasing benchmark: registries, data contract, runner, store, sweeps, perf."""
