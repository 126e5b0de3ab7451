"""modelpress compression library.

Stands alone: it imports nothing from `app/` or `worker/`, reports progress through the `RunContext` it is given
and never touches a database. Modules that the API process imports (`compression.specs`, `compression.inspect`)
must not import torch; everything else may.
"""

__version__ = "0.1.0"
