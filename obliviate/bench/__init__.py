"""Benchmarks: reproducible setups (data, model, recipe, deletion request, audits, budget).

Each module in this package registers its benchmarks; ``runner.run(spec)`` executes one run.
"""
