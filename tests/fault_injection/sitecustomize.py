"""Test-only fault injection (never imported by the package): a hard crash of the Ray worker that triangulates
the clips named in REALCAM_TEST_CRASH_IDS (comma-separated), as a segfault or an OOM kill would end it.

tests/test_job.py puts this folder on PYTHONPATH for the local Ray it starts, so every worker runs this at
start-up; the package itself has no test hook. The hook wraps ``annotate.clip.triangulate_stage`` when that
module is first imported (before the job's pipeline binds the name).
"""

import os
import sys

_IDS = {c for c in os.environ.get("REALCAM_TEST_CRASH_IDS", "").split(",") if c}

if _IDS:
    import importlib.abc
    import importlib.util

    class _CrashOnClips(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "annotate.clip":
                return None
            sys.meta_path.remove(self)  # find the real module once, then step aside
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                real = module.triangulate_stage

                def triangulate_stage(row, cfg):
                    if row["clip_id"] in _IDS:
                        os._exit(1)
                    return real(row, cfg)

                module.triangulate_stage = triangulate_stage

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _CrashOnClips())
