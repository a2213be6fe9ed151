"""Training: state, optimizer, pure steps (steps.py), objectives and the run loop."""
