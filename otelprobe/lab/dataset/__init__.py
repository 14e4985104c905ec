"""Dataset production: scenarios (lab/scenario.py) resolved into incidents (incidents.py), run
against the emulated lab (runner.py) and recorded with labels (recording.py); campaigns of them
(generator.py, profiles.py) and the attribution experiments run on them (experiments.py)."""
