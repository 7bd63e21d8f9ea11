"""Everything that is not UI: configuration, providers, imaging, storage, executor, exports, CLI.

Nothing in this package imports streamlit, connects anywhere or reads the environment at import time.
"""

__version__ = "0.1.0"
