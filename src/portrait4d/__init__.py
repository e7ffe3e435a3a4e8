"""portrait4d: one-shot 4D head avatars after Portrait4D-v2 (ECCV 2024).

Layers point one way: ``camera`` / ``render`` -> ``models`` -> training and inference
-> ``cli``. Library code never picks a device; it follows the tensors it is given.
"""

__version__ = "0.1.0"
