"""``python -m mlflow_nemo_judge.testing.mock_llm``: serve the mock models until SIGTERM."""

import sys

from mlflow_nemo_judge.testing.mock_llm import main

sys.exit(main())
