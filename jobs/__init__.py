"""Ray Job entrypoints (`python -m jobs.<name>`): the batch application on mlplatform."""
