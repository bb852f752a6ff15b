"""Speed benchmark of the job against a plain aiokafka loop: ``python -m benchmarks``.

Not part of the test run. See ``benchmarks/harness.py`` for what is measured and how.
"""
