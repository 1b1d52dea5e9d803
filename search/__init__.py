"""Multi-objective search over simulator configurations (Optuna study + Ray workers).

``study_file`` loads and validates YAML study files, ``space`` defines parameters, ``driver``
runs/resumes a study, ``report`` writes the Pareto report and ``cli`` adds ``blis search`` and
``blis report``.
"""
