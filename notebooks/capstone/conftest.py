"""The capstone notebook here stops at its TODO on purpose, so nbval must not run it: it runs the
solution in ``solutions/`` instead."""

collect_ignore = ["ppo_training_loop.ipynb"]
