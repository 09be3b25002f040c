"""`attrib train`."""

from __future__ import annotations

import json

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup, stdout_is_terminal

from attrib.training.options import TrainOptions


def train(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = TrainOptions(**values, progress=not quiet)
    from attrib import log

    if options.check_run is not None:
        from attrib.training.check import check_run

        result = check_run(options.check_run, options.device)
        if stdout_is_terminal():
            if result["identical"]:
                print(
                    f"{options.check_run}: the replay reproduces the run bitwise "
                    f"({result['steps']} steps)"
                )
            else:
                print(
                    f"{options.check_run}: the replay differs from the run from step "
                    f"{result['first_difference']} (largest difference "
                    f"{result['max_abs_diff']:.3g}; threads {result['threads']} now, "
                    f"{result['recorded_threads']} when recorded)"
                )
        else:
            print(json.dumps(result))
        if not result["identical"]:
            log.warn("not bitwise: other threads, device or nondeterministic kernels")
        return
    from attrib.training.train import run_train

    out = run_train(options)
    if log.is_main_process():  # under --fsdp every process returns; one says where the run is
        print(out)


train.__doc__ = TrainOptions.__doc__
OPTIONS = TrainOptions
command = options_command(TrainOptions, train, (quiet_extra(),))
