"""The fusion math: exact factor-level SVD (``linalg``), the style subspace (``basis``), the
module pairing and batched projection (``merge``), and the readable one-module version
(``reference``)."""
