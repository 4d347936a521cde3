"""What users write: workflow definitions, the contexts their code receives, retry
policies, durations and the values that cross the journal.

Pure Python, no runtime: nothing here imports the engine, an adapter or a backend.
The public names are re-exported by :mod:`workkit_workflow`.
"""
