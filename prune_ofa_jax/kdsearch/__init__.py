"""KD-pipeline search (Distiller's search space, random search over short student runs) and
AutoDistiller (a regressor over the accumulated results that recommends a pipeline for a new
task). Application layer: built on train/, distill/ and recipes.py."""
