"""Replayable training runs: `attrib train` records one (batches, snapshots), `--check`
replays it bitwise, `evaluate retrain --same-run` replays it without some rows, and
`attrib magic` differentiates it with respect to every row's loss weight (metagradients)."""
