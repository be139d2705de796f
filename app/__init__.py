"""The app layer: every command (Hydra entry points), the pipeline and its stages, console
output, W&B and the report files. It is the only package that imports omegaconf, hydra, rich
or wandb, prints, or changes process state (threads, seeds, logging, warning filters), and it
restores what it changes. The libraries below it (`ofa`, `predictors`, `search`) take plain
values, return results and print nothing. See docs/architecture.md.
"""
